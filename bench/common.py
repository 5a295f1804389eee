"""Timing utilities shared by the benchmarks: percentiles, machine noise, result rows, tables and JSON.

Figures are ratios against a baseline measured in the same run (STYLE.md "Speed is measured, not
asserted"), so every benchmark returns `Result` rows with `value`, `baseline` and `ratio`, and a `Noise`
reading for each timed run: CPU used by processes *outside* our own process tree while it ran
(perf-anchors §6: this machine is shared; a run with others above ~10 % of a core is flagged).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "NOISY_SHARE",
    "Noise",
    "NoiseReading",
    "Result",
    "Section",
    "WorldProcess",
    "free_port",
    "machine_stamp",
    "median_ratio",
    "percentile",
    "print_table",
    "process_jiffies",
    "quiet_logging",
    "stop_process",
    "summary",
    "wait_http_ok",
    "write_json",
]

RESULTS_DIR = Path(__file__).parent / "results"
NOISY_SHARE = 0.10  # other processes above 10 % of one core during a run: flag it (perf-anchors §6)
QUIET_SHARE = 0.08  # ...and wait for less than 8 % before starting one, for a bounded time
_TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100), as numpy's default; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": statistics.fmean(values) if values else math.nan,
    }


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """Median over repeats of value/baseline, the comparison perf-anchors §7.2 asks for."""
    ratios = [a / b for a, b in pairs if b > 0]
    return statistics.median(ratios) if ratios else math.nan


# --- noise ---------------------------------------------------------------------------------------------


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def _proc_stats() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime) for every process we can read."""
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # gone between listdir and open
        rest = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
        # fields after ")": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
        out[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return out


def _tree_jiffies(root: int) -> int:
    """CPU used so far by `root` and all its live descendants, including children they have reaped."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in stats:
            total += stats[pid][1]
        stack.extend(children.get(pid, ()))
    return total


def process_jiffies(pid: int) -> int:
    """utime+stime (+ reaped children) of one process; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return 0
    rest = raw[raw.rfind(")") + 2 :].split()
    return sum(int(x) for x in rest[11:15])


@dataclass(frozen=True)
class NoiseReading:
    """CPU shares in units of one core (1.0 = one core fully busy) over `seconds` of wall time."""

    label: str
    seconds: float
    others: float  # everything on the machine outside our process tree
    ours: float  # our process tree (this process, servers and workers we started, redis-server)
    noisy: bool
    kept: bool = True  # False: the run was noisy and was redone; its figures are not in the results

    def describe(self) -> str:
        flag = " NOISY" if self.noisy else ""
        return f"others {self.others * 100:.0f}% / ours {self.ours * 100:.0f}% of a core{flag}"


class Noise:
    """Samples machine CPU around a timed run: `with noise.run("label"): ...` appends a `NoiseReading`."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root or os.getpid()
        self.readings: list[NoiseReading] = []

    def _sample(self) -> tuple[float, int, int, int]:
        busy, total = _busy_jiffies()
        return time.monotonic(), busy, total, _tree_jiffies(self.root)

    @staticmethod
    def _shares(a: tuple[float, int, int, int], b: tuple[float, int, int, int]) -> tuple[float, float]:
        seconds = max(b[0] - a[0], 1e-9)
        ours = max(0, b[3] - a[3]) / _TICK / seconds
        busy = max(0, b[1] - a[1]) / _TICK / seconds
        return max(0.0, busy - ours), ours

    def others_now(self, window: float = 1.0) -> float:
        a = self._sample()
        time.sleep(window)
        return self._shares(a, self._sample())[0]

    def wait_quiet(
        self, *, threshold: float = QUIET_SHARE, window: float = 1.0, max_wait: float = 8.0
    ) -> float:
        """Wait (at most `max_wait` s) until other processes use less than `threshold` of a core over
        `window` s; returns the last level seen, so a caller can record that the gate was not met."""
        deadline = time.monotonic() + max_wait
        level = self.others_now(window)
        while level >= threshold and time.monotonic() + window <= deadline:
            level = self.others_now(window)
        return level

    @contextlib.contextmanager
    def run(self, label: str) -> Iterator[None]:
        start = self._sample()
        try:
            yield
        finally:
            end = self._sample()
            others, ours = self._shares(start, end)
            self.readings.append(
                NoiseReading(label, end[0] - start[0], others, ours, noisy=others > NOISY_SHARE)
            )

    def last_noisy(self, count: int = 1) -> bool:
        return any(r.noisy for r in self.readings[-count:])

    def discard(self, count: int = 1) -> None:
        """Mark the last `count` readings as redone: their runs' figures were thrown away."""
        for i in range(len(self.readings) - count, len(self.readings)):
            self.readings[i] = replace(self.readings[i], kept=False)


# --- results ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One figure. `ratio` is value/baseline (both measured in this run); `met` is None without a target."""

    name: str
    metric: str
    value: float | None
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    notes: str = ""


@dataclass
class Section:
    """What one benchmark hands back: its rows, its noise readings and raw details for the JSON."""

    name: str
    results: list[Result] = field(default_factory=list)
    noise: list[NoiseReading] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, *results: Result) -> None:
        self.results.extend(results)

    def noise_note(self) -> str:
        kept = [r for r in self.noise if r.kept]
        if not kept:
            return ""
        worst = max(r.others for r in kept)
        median = statistics.median(r.others for r in kept)
        noisy = [r.label for r in kept if r.noisy]
        redone = len(self.noise) - len(kept)
        text = f"other processes: median {median * 100:.0f}%, worst {worst * 100:.0f}% of a core"
        text += f"; {redone} noisy run(s) redone or left out" if redone else ""
        return text + (f"; STILL NOISY (kept): {', '.join(noisy)}" if noisy else "")


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(sections: Sequence[Section], stream: Any = None) -> None:
    stream = stream or sys.stdout
    header = ("benchmark", "metric", "value", "baseline", "ratio", "target", "met", "notes")
    rows: list[tuple[str, ...]] = []
    for section in sections:
        if section.error:
            rows.append((section.name, "error", "–", "–", "–", "", "–", section.error))
        for r in section.results:
            met = "–" if r.met is None else ("yes" if r.met else "NO")
            ratio = "–" if r.ratio is None else f"{r.ratio:.2f}×"
            rows.append((r.name, r.metric, _fmt(r.value), _fmt(r.baseline), ratio, r.target, met, r.notes))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[-1]
    print(line, file=stream)
    print("-" * min(len(line) + 20, 160), file=stream)
    for row in rows:
        cells = [
            c.rjust(w) if i in (2, 3, 4) else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join(cells) + "  " + row[-1], file=stream)
    for section in sections:
        note = section.noise_note()
        if note:
            print(f"[{section.name}] machine noise: {note}", file=stream)


# --- stamp and JSON --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _redis_version() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=5)
        for part in out.stdout.split():
            if part.startswith("v="):
                return part[2:]
    return None


def machine_stamp() -> dict[str, Any]:
    packages = [
        "slack-bolt",
        "slack-sdk",
        "mcp",
        "anthropic",
        "httpx2",
        "redis",
        "rq",
        "uvicorn",
        "starlette",
    ]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        "redis_server": _redis_version(),
        "packages": {p: _version(p) for p in packages},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(sections: Sequence[Section], stamp: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    payload = {
        "machine": stamp,
        "benchmarks": {
            s.name: {
                "results": [asdict(r) for r in s.results],
                "noise": [asdict(n) for n in s.noise],
                "details": s.details,
                "error": s.error,
            }
            for s in sections
        },
    }
    path = directory / name
    path.write_text(json.dumps(_jsonable(payload), indent=2, default=str))
    return path


def quiet_logging() -> None:
    """The SDK's MCPServer calls logging.basicConfig(INFO) when a fixture server is built, after which every
    httpx2 request is logged in-process: that is work neither side of a comparison should pay."""
    import logging

    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        handler.setLevel(logging.WARNING)


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
    """Stop a process we started (in its own session) and everything it forked: SIGTERM to its process
    group by id, SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    # Work-horses or helpers left in the group after the leader exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_http_ok(url: str, *, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `url` until it answers 200 (bounded); raise if the process dies or time runs out."""
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server process exited with {proc.returncode}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)  # bounded by the deadline above
    raise TimeoutError(f"{url} did not answer within {timeout} s")


# --- the fixture world in a process of its own ---------------------------------------------------------


def _world_main() -> None:  # pragma: no cover - runs in the child
    """Child side of `WorldProcess`: start the world, print what the parent needs, live until stdin closes."""
    from fixtures.world import start_world

    public_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:1"
    world = start_world()
    quiet_logging()
    world.allow_redirect(public_url)
    info = {
        "env": world.env(public_url=public_url),
        "resources": {name: world.resource(name) for name in world.servers},
        "admin": {name: s.base_url for name, s in world.servers.items()},
        "login": {p: world.idp.login_url(p) for p in ("alice", "bob", "carol", "dave", "erin")},
        "secret_key": world.secret_key,
        "registry_url": world.registry_url,
        "issuer": world.idp.issuer,
    }
    print(json.dumps(info), flush=True)
    try:
        sys.stdin.read()  # the parent holds the pipe; EOF (parent gone or done) ends the world
    finally:
        world.stop()


class WorldProcess:
    """The whole fixture world (IdP, registry, MCP servers, Slack, model) in a child process, so that a
    client measured in this process does not share its interpreter (and GIL) with the servers."""

    def __init__(self, public_url: str = "http://127.0.0.1:1") -> None:
        self.public_url = public_url
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> WorldProcess:
        code = "import sys; from bench.common import _world_main; _world_main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, self.public_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(Path(__file__).resolve().parent.parent),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=60):
                stop_process(self.proc)
                raise TimeoutError("the fixture world did not start within 60 s")
        line = self.proc.stdout.readline()
        if not line:
            stop_process(self.proc)
            raise RuntimeError("the fixture world process exited before it was up")
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
            stop_process(self.proc)
