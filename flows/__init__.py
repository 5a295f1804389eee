"""Application flows: each a small class taking the narrow ports it uses (flows.ports), wired per process.

No Slack, RQ or process wiring here: the Slack edge (bot/) implements the output ports in its own words.
"""
