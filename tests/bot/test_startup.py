"""Starting `serve`, `worker` and `doctor` with settings or services wrong (SPEC §3, issue 21 item 1): every
setting problem in one run, one line each, exit 2; then the services in one order, Redis before Slack, one
line naming the variable; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from fixtures.redis_proc import free_port
from fixtures.world import World, start_world

REQUIRED_FOR_WORKER = (
    "SLACK_BOT_TOKEN",
    "REGISTRY_URL",
    "OAUTH_ISSUER",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "CHATOPS_SECRET_KEY",
    "REDIS_URL",
    "ANTHROPIC_API_KEY",
)
OURS = ("SLACK_", "ANTHROPIC_", "OAUTH_", "CHATOPS_", "REDIS_URL", "REGISTRY_", "PUBLIC_URL", "PORT")


def clean_env(**settings: str) -> dict[str, str]:
    """The machine's environment without any of the bot's settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    return {**env, "CHATOPS_NETGUARD": "1", **settings}


def chatops(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # Run in an empty folder: no stray .env is read.
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=clean_env(**settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def complete(redis_url: str) -> dict[str, str]:
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "SLACK_BOT_TOKEN": "xoxb-1-startup",
        "SLACK_SIGNING_SECRET": "startup-signing",
        "SLACK_API_URL": f"{dead}/api/",
        "ANTHROPIC_API_KEY": "sk-ant-startup",
        "REGISTRY_URL": dead,
        "OAUTH_ISSUER": dead,
        "OAUTH_CLIENT_ID": "chatops",
        "OAUTH_CLIENT_SECRET": "startup-client-secret",
        "CHATOPS_SECRET_KEY": Fernet.generate_key().decode(),
        "REDIS_URL": redis_url,
    }


def test_a_worker_with_nothing_set_names_every_missing_setting_in_one_run(tmp_path: Path) -> None:
    done = chatops(tmp_path, "worker")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == list(REQUIRED_FOR_WORKER), done.stderr
    assert all(line.startswith("chatops: configuration error: ") for line in lines)
    assert "Traceback" not in done.stderr


def test_malformed_and_missing_settings_are_reported_together(tmp_path: Path) -> None:
    done = chatops(
        tmp_path, "serve", PORT="eighty", SLACK_BOT_TOKEN="xoxp-user-token", APPROVAL_TTL_SECONDS="-5"
    )
    assert done.returncode == 2
    named = [line.split(": ")[2] for line in done.stderr.splitlines()]
    assert {"PORT", "SLACK_BOT_TOKEN", "APPROVAL_TTL_SECONDS"} <= set(named)  # malformed
    assert {"REGISTRY_URL", "SLACK_SIGNING_SECRET", "REDIS_URL"} <= set(named)  # and missing
    assert len(named) == len(set(named))  # one line per variable
    assert "xoxp-user-token" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unreachable_redis_is_one_line_naming_redis_url_before_slack(tmp_path: Path, command: str) -> None:
    settings = complete(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens; Slack is unreachable too
    done = chatops(tmp_path, command, **settings)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("chatops: configuration error: REDIS_URL: Redis at 127.0.0.1:")
    assert line.endswith("did not answer (ConnectionError)")
    doctor = chatops(tmp_path, "doctor", **settings)
    redis_line = next(x for x in doctor.stdout.splitlines() if " Redis: " in x)
    assert redis_line == "BAD  Redis: " + line.removeprefix("chatops: configuration error: ")


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_unreachable_slack_is_named_after_redis_answers(tmp_path: Path, command: str, redis_url: str) -> None:
    done = chatops(tmp_path, command, **complete(redis_url))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("chatops:")]
    assert line.startswith("chatops: configuration error: SLACK_API_URL: Slack at http://127.0.0.1:")
    assert "cannot be reached" in line


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    started = start_world()
    yield started
    started.stop()


@pytest.mark.parametrize(
    ("command", "variable", "what"),
    [
        ("serve", "REGISTRY_URL", "the registry"),
        ("worker", "OAUTH_ISSUER", "the identity provider"),
        ("worker", "ANTHROPIC_BASE_URL", "the Messages API"),
    ],
)
def test_a_service_that_answers_nothing_is_one_line_naming_its_variable(
    tmp_path: Path, redis_url: str, world: World, command: str, variable: str, what: str
) -> None:
    """After Redis and Slack: the registry, the identity provider and (a worker's) model, each must answer
    at its address, in doctor's order; the first that does not stops the start, named."""
    env = world.env(public_url="http://127.0.0.1:9")
    settings = {**complete(redis_url), **{k: env[k] for k in ("SLACK_API_URL", "SLACK_BOT_TOKEN")}}
    settings |= {k: env[k] for k in ("REGISTRY_URL", "OAUTH_ISSUER", "ANTHROPIC_BASE_URL")}
    dead = f"http://127.0.0.1:{free_port()}"
    settings[variable] = dead
    done = chatops(tmp_path, command, **settings)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("chatops:")]
    assert line.startswith(f"chatops: configuration error: {variable}: {what} at {dead}")
    assert line.endswith("cannot be reached (ConnectError); check the address")
