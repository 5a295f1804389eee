"""SIGTERM and SIGINT stop `serve --dev`, `worker --dev`, `demo --keep` and `python -m fixtures` with
everything they started, the embedded Redis included (issue 21 items 2 and 3): real processes, killed with
each signal, and no descendant left alive. `--dev` processes of one folder share one embedded Redis, and
`demo --keep` prints an environment that `chatops doctor` works with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import redis

from approvals import turn_queue
from bot.queues import AGENT, QUEUE_NAMES
from devtools.embedded import DEV_REDIS_FILE
from devtools.process_tree import Identity, descendants, stop_tree
from fixtures.redis_proc import free_port
from fixtures.waiting import wait_until
from fixtures.world import World, start_world

STOP = [signal.SIGTERM, signal.SIGINT]
SLOW = 120.0  # start-up of a whole bot on a loaded machine


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    started = start_world()
    yield started
    started.stop()


def alive(identity: Identity) -> bool:
    try:
        stat = Path(f"/proc/{identity[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[19] == identity[1] and stat[0] != "Z"


def chatops(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )


def dev_env(world: World, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHATOPS_SECRET_KEY")}
    env |= world.env(public_url=f"http://127.0.0.1:{port}")
    env.pop("CHATOPS_SECRET_KEY")
    return env | {"PORT": str(port), "CHATOPS_NETGUARD": "1", "PYTHONPATH": str(Path.cwd())}


def listening_everywhere(client: redis.Redis) -> bool:
    """RQ's workers on the action and workflow queues, and turn slots on the turn queue."""
    rq = all(client.scard(f"rq:workers:{q}") for q in QUEUE_NAMES if q != AGENT)
    return rq and turn_queue.live_slots(client) > 0


def stop_and_wait(proc: subprocess.Popen[bytes], signum: int) -> int:
    tree = descendants(proc.pid)
    proc.send_signal(signum)
    code = proc.wait(timeout=SLOW)
    survivors = [pid for pid in tree if alive(pid)]
    wait_until("the rest of the tree to exit", lambda: not [p for p in survivors if alive(p)], timeout=30)
    return code


def healthy(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


@pytest.mark.parametrize("signum", STOP, ids=lambda s: s.name)
def test_dev_processes_share_one_redis_and_each_stops_with_what_it_started(
    world: World, tmp_path: Path, signum: signal.Signals
) -> None:
    port = free_port()
    env = dev_env(world, port)
    serve = chatops(["serve", "--dev", "--host", "127.0.0.1"], env, tmp_path, tmp_path / "serve.log")
    try:
        wait_until("serve --dev to answer", lambda: healthy(port) or serve.poll() is not None, timeout=SLOW)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()
        url = (tmp_path / DEV_REDIS_FILE).read_text().strip()
        assert f"embedded Redis at {url}, started here" in (tmp_path / "serve.log").read_text()
        [redis_server] = [p for p in descendants(serve.pid) if "redis-server" in proc_name(p[0])]

        worker = chatops(["worker", "--dev"], env, tmp_path, tmp_path / "worker.log")
        shared = redis.Redis.from_url(url)
        wait_until(
            "the worker to listen on the shared Redis",
            lambda: listening_everywhere(shared) or worker.poll() is not None,
            timeout=SLOW,
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        assert f"embedded Redis at {url}, found in" in (tmp_path / "worker.log").read_text()
        assert not [p for p in descendants(worker.pid) if "redis-server" in proc_name(p[0])]

        assert stop_and_wait(worker, signum) in (0, -signum)  # RQ's warm shutdown, or the signal
        assert shared.ping()  # the worker did not start it, so it did not stop it
        shared.close()

        assert stop_and_wait(serve, signum) == -signum  # dies by the signal: 143 or 130 in a shell
        assert not alive(redis_server)
        assert not (tmp_path / DEV_REDIS_FILE).exists()
    finally:
        for proc in (serve, *([worker] if "worker" in locals() else [])):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("signum", STOP, ids=lambda s: s.name)
def test_a_worker_that_started_the_dev_redis_stops_it(
    world: World, tmp_path: Path, signum: signal.Signals
) -> None:
    worker = chatops(["worker", "--dev"], dev_env(world, free_port()), tmp_path, tmp_path / "worker.log")
    try:
        wait_until("the dev Redis file", lambda: (tmp_path / DEV_REDIS_FILE).exists(), timeout=SLOW)
        shared = redis.Redis.from_url((tmp_path / DEV_REDIS_FILE).read_text().strip())
        wait_until(
            "the worker to listen on every queue",
            lambda: listening_everywhere(shared) or worker.poll() is not None,
            timeout=SLOW,
        )
        shared.close()
        tree = descendants(worker.pid)
        assert any("redis-server" in proc_name(p[0]) for p in tree)
        assert stop_and_wait(worker, signum) in (0, -signum)
        assert not [p for p in tree if alive(p)]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def exported(text: str) -> dict[str, str]:
    import shlex

    lines = [line.removeprefix("export ") for line in text.splitlines() if line.startswith("export ")]
    return dict(shlex.split(line)[0].split("=", 1) for line in lines)


@pytest.mark.parametrize("signum", STOP, ids=lambda s: s.name)
def test_demo_keep_prints_an_environment_doctor_works_with_and_stops_whole(
    tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    env["CHATOPS_DEMO_WAIT_SECONDS"] = str(SLOW)
    demo = chatops(["demo", "--keep"], env, Path.cwd(), log)
    try:
        wait_until(
            "the environment block",
            lambda: "Ctrl-C" in log.read_text() or demo.poll() is not None,
            timeout=SLOW * 2,
        )
        wait_until(
            "the block to be complete", lambda: "export CHATOPS_NETGUARD" in log.read_text(), timeout=10
        )
        assert demo.poll() is None, log.read_text()
        block = exported(log.read_text())
        for key in (
            "REDIS_URL",
            "ANTHROPIC_BASE_URL",
            "SLACK_API_URL",
            "OAUTH_CLIENT_SECRET",
            "CHATOPS_SECRET_KEY",
        ):
            assert key in block
        if signum == signal.SIGTERM:  # once is enough: the doctor takes a while
            clean = {
                k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OAUTH_", "CHATOPS_"))
            }
            for command in (["doctor"], ["stats"], ["audit", "export"], ["registry"]):
                done = subprocess.run(
                    [sys.executable, "-m", "bot.cli", *command],
                    env=clean | block,
                    capture_output=True,
                    text=True,
                    timeout=SLOW,
                    check=False,
                )
                assert done.returncode == 0, done.stdout + done.stderr
                if command == ["doctor"]:  # every check ran, and passed (the demo's worker listens)
                    assert not [x for x in done.stdout.splitlines() if x.startswith(("skip ", "BAD "))]
                if command == ["audit", "export"]:
                    assert '"kind":"tool_call"' in done.stdout  # the demo's incident
        tree = descendants(demo.pid)
        assert len(tree) >= 3  # serve, worker (and its turn pool), redis-server
        assert stop_and_wait(demo, signum) == -signum
        assert not [p for p in tree if alive(p)]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)


def test_python_m_fixtures_prints_a_redis_url_and_stops_it(tmp_path: Path) -> None:
    log = tmp_path / "fixtures.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fixtures"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until("the world", lambda: "Ctrl-C" in log.read_text() or proc.poll() is not None, timeout=SLOW)
        url = exported(log.read_text())["REDIS_URL"]
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
        tree = descendants(proc.pid)
        assert stop_and_wait(proc, signal.SIGTERM) == 0
        assert not [p for p in tree if alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_the_demo_plays_to_the_end_from_any_folder(tmp_path: Path) -> None:
    """The README's first command, as a newcomer runs it: from a folder of their own, nothing set."""
    log = tmp_path / "demo.log"
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY", "WORKFLOWS_DIR")
    }
    env |= {"CHATOPS_DEMO_WAIT_SECONDS": str(SLOW), "PYTHONPATH": str(Path.cwd())}
    demo = chatops(["demo"], env, tmp_path, log)
    try:
        assert demo.wait(timeout=SLOW * 8) == 0, log.read_text()
    finally:
        stop_tree(demo)
    said = log.read_text()
    assert "demo finished." in said
    assert "restart-failed-dag" in said
    assert "demo failed" not in said
