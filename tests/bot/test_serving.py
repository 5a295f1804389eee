"""What an operator sees when starting `serve` and the other commands (issue 21 item 5): the listening
address once, no spurious Bolt warnings, each warning once, a busy port named as PORT; every subcommand's
--help describes it and its settings; `audit tail` idles quietly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import redis

from bot.cli import build_parser
from fixtures.redis_proc import free_port
from fixtures.waiting import wait_until
from fixtures.world import World, start_world

SLOW = 120.0


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    started = start_world()
    yield started
    started.stop()


def serve_env(world: World, redis_url: str, port: int) -> dict[str, str]:
    env = os.environ | world.env(public_url=f"http://127.0.0.1:{port}", redis_url=redis_url)
    return env | {"PORT": str(port), "CHATOPS_NETGUARD": "1", "LOG_LEVEL": "INFO"}


def healthy(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def test_serve_says_where_it_listens_once_and_warns_only_what_matters_once(
    world: World, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"],
            env=serve_env(world, redis_url, port),
            stderr=out,
        )
    try:
        wait_until("serve to answer", lambda: healthy(port) or serve.poll() is not None, timeout=SLOW)
        assert serve.poll() is None, log.read_text()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=SLOW)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    listening = [m for m in messages if m.startswith("listening on ")]
    assert listening == [f"listening on http://127.0.0.1:{port} (PUBLIC_URL http://127.0.0.1:{port})"]
    warnings = Counter(line["message"] for line in lines if line["level"] == "warning")
    assert not [m for m in warnings if "token" in m], warnings  # Bolt's notes about its own arguments
    assert warnings, "the test Redis has appendonly off: one warning is expected"
    assert set(warnings.values()) == {1}, warnings


def test_a_busy_port_is_one_line_naming_port(world: World, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"],
            env=serve_env(world, redis_url, port),
            capture_output=True,
            text=True,
            timeout=SLOW,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("chatops:")]
    assert errors == [
        f"chatops: configuration error: PORT: 127.0.0.1:{port} cannot be used (Address already in use)"
    ]
    assert "Traceback" not in done.stderr
    assert "errno" not in done.stderr.lower()


COMMANDS = [
    ["serve"],
    ["worker"],
    ["demo"],
    ["registry"],
    ["doctor"],
    ["workflows"],
    ["keygen"],
    ["audit", "export"],
    ["audit", "tail"],
    ["stats"],
    ["manifest"],
    ["approvals"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_help_describes_it_and_names_its_settings(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: chatops {' '.join(command)} ")
    description = text.split("\n\n")[1]
    assert len(description) > 40
    assert not description.startswith(("options:", "positional"))
    assert "settings (environment or ./.env): " in text
    if command == ["manifest"]:
        assert "PUBLIC_URL" in text.split("settings (environment or ./.env): ")[1]


def test_audit_tail_idles_quietly_and_still_sees_the_next_record(redis_url: str, tmp_path: Path) -> None:
    # A 1 s socket timeout: an XREAD blocking longer than the client waits would read as a lost Redis.
    url = redis_url + ("&" if "?" in redis_url else "?") + "socket_timeout=1"
    client = redis.Redis.from_url(redis_url)
    before = int(client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "audit", "tail"],
            env=os.environ | {"REDIS_URL": url},
            stdout=stdout,
            stderr=stderr,
        )
    try:

        def reads() -> int:
            return int(client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)) - before

        wait_until("several idle reads, past the socket timeout", lambda: reads() >= 6, timeout=SLOW)
        client.xadd("chatops:audit", {"record": json.dumps({"kind": "tool_call", "outcome": "succeeded"})})
        wait_until("the new record", lambda: "tool_call" in out.read_text(), timeout=SLOW)
    finally:
        tail.send_signal(signal.SIGTERM)
        tail.wait(timeout=SLOW)
        client.close()
    assert err.read_text() == ""  # nothing said while idle
