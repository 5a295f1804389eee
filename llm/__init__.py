"""Adapters from model SDKs to the agent's `Model` port; `llm.anthropic` is the Messages API one."""
