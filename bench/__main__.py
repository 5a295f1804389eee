"""`python -m bench [registry|tool_call|ingress|turn|approval|scale|cost ...]`: run the chosen benchmarks
(default all), print one table, write bench/results/<timestamp>.json.

`--profile` runs the chosen benchmarks' hot path under pyinstrument instead and writes the reports to
bench/results/profile-<name>-<timestamp>.txt (registry: cold refresh; tool_call: gateway calls; ingress:
the `serve` process during the load; turn: the turn flow (`bot.jobs.turn_runner`), called in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import RESULTS_DIR, Section, machine_stamp, print_table, quiet_logging, write_json

NAMES = ("registry", "tool_call", "ingress", "turn", "approval", "scale", "cost")


def _runner(name: str, quick: bool, fastmcp: bool) -> Callable[[], Section]:
    if name == "registry":
        from bench import registry

        return lambda: registry.run(repeats=3, n=2000 if quick else 5000)
    if name == "tool_call":
        from bench import tool_call

        return lambda: tool_call.run(repeats=3 if quick else 5, calls=200, with_fastmcp=fastmcp)
    if name == "ingress":
        from bench import ingress

        return lambda: ingress.run(repeats=1 if quick else 3, seconds=3.0 if quick else 5.0)
    if name == "turn":
        from bench import turn

        return lambda: turn.run(turns=5 if quick else 10)
    if name == "approval":
        from bench import approval

        return lambda: approval.run(approvals=10 if quick else 30, budget_seconds=20.0 if quick else 45.0)
    if name == "scale":
        from bench import scale

        return lambda: scale.run(steps=scale.QUICK_STEPS if quick else scale.STEPS)
    if name == "cost":
        from bench import cost

        return cost.run
    raise ValueError(name)


def _render(session: Path, out: Path) -> None:
    """Text reports from a saved pyinstrument session: the call tree, and a flat list of self time by
    function (`.flat.txt`), which names the library code that our calls end up in."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session as ProfileSession

    loaded = ProfileSession.load(str(session))
    out.write_text(ConsoleRenderer(unicode=True, color=False).render(loaded))
    flat = out.with_suffix(".flat.txt")
    flat.write_text(ConsoleRenderer(unicode=True, color=False, flat=True, show_all=True).render(loaded))


def _profile(name: str, stamp: str) -> Path:
    """Run `name`'s hot path under pyinstrument; returns the text report (a `.flat.txt` sits beside it)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"profile-{name}-{stamp}.txt"
    session = out.with_suffix(".pyisession")
    if name in ("registry", "tool_call", "turn"):
        from pyinstrument import Profiler

        from bench import registry, tool_call, turn

        profiler = Profiler(interval=0.0005, async_mode="enabled")
        if name == "turn":
            turn.profile_target(profiler)
        else:
            target = registry.profile_target if name == "registry" else tool_call.profile_target
            asyncio.run(target(profiler))
        assert profiler.last_session is not None
        profiler.last_session.save(str(session))
    else:
        from bench import ingress

        os.environ["BENCH_PROFILE_SERVE"] = str(session)
        try:
            ingress.run(repeats=1, seconds=5.0, rates=(100,))
        finally:
            del os.environ["BENCH_PROFILE_SERVE"]
    _render(session, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; figures are rough)")
    parser.add_argument("--no-fastmcp", action="store_true", help="skip the fastmcp client comparison")
    parser.add_argument("--no-json", action="store_true", help="print the table only")
    parser.add_argument("--profile", action="store_true", help="profile the hot paths instead of timing")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    quiet_logging()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.profile:
        if {"approval", "scale", "cost"} & set(names):
            parser.error("approval, scale and cost have no --profile target")
        for name in names:
            print(f"profiling {name} ...", file=sys.stderr, flush=True)
            print(f"{name}: {_profile(name, stamp)}")
        return 0
    machine = machine_stamp()
    sections: list[Section] = []
    started = time.monotonic()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            section = _runner(name, args.quick, not args.no_fastmcp)()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            section = Section(name, error=f"{type(exc).__name__}: {exc}"[:200])
        section.details["seconds"] = round(time.monotonic() - t0, 1)
        sections.append(section)
        print(f"  {name}: {section.details['seconds']} s", file=sys.stderr, flush=True)
    machine["suite_seconds"] = round(time.monotonic() - started, 1)
    print()
    print(
        f"chatops-mcp bench · {machine['date']} · {machine['nproc']} × {machine['cpu_model']} · "
        f"Python {machine['python']} · {machine['suite_seconds']} s"
    )
    print_table(sections)
    if not args.no_json:
        print(f"\nwritten: {write_json(sections, machine)}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
