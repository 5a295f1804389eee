"""What a person runs on one machine with nothing installed: the demo and the embedded Redis of `--dev`.

Kept out of the runtime packages so that a deployment never imports the fixture world (fake Slack, fake
model, fake provider) or an embedded Redis; `bot.cli` imports this package lazily, only for `demo` and
`--dev`."""
