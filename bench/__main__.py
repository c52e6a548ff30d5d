"""``python -m bench [--smoke] [--only NAME ...] [--out FILE] [--keep]``: run, print, write.

Runs each measure (a group of rows) in turn, each in its own folder under a
temporary work dir, prints the table (measure, baseline, agentfleet, ratio, goal,
met?) and writes the rows with the machine's facts to ``bench/results.json``. A
measure that fails is reported as failed with its error, and the others still run;
the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import cache, fanout, gap, gitops, plan, pool, proxy
from bench.common import Row, machine_facts, say, table
from bench.sprints import Context

# In running order: the quick ones first, so a smoke run fails fast.
GROUPS = {
    "plan": plan,
    "proxy": proxy,
    "git": gitops,
    "fanout": fanout,
    "gap": gap,
    "cache": cache,
    "pool": pool,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def selected(only: list[str] | None) -> list[str]:
    """The groups to run: all, or those named (by group or by one of their rows)."""
    if not only:
        return list(GROUPS)
    wanted = []
    for name in only:
        group = next((g for g, m in GROUPS.items() if name == g or name in m.ROWS), None)
        if group is None:
            names = sorted({*GROUPS, *(r for m in GROUPS.values() for r in m.ROWS)})
            raise SystemExit(f"unknown measure {name!r}; one of: {', '.join(names)}")
        if group not in wanted:
            wanted.append(group)
    return [g for g in GROUPS if g in wanted]


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every measure ran (met goals or not), 1 when one failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it works")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run this measure (a group or a row name); repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the results JSON")
    parser.add_argument("--work-dir", type=Path, help="where to work (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    args = parser.parse_args(argv)
    groups = selected(args.only)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="agentfleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    say(f"{'smoke ' if args.smoke else ''}run of {', '.join(groups)} in {work}; "
        f"{facts['cores']} cores, load {facts['load_average']}")
    ctx = Context(work, smoke=args.smoke)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    try:
        for name in groups:
            started = time.perf_counter()
            group_dir = work / name
            group_dir.mkdir()
            try:
                rows += GROUPS[name].measure(ctx, group_dir)
            except Exception as exc:  # noqa: BLE001 - report it, run the others
                traceback.print_exc()
                failures[name] = f"{type(exc).__name__}: {exc}"
                say(f"{name} FAILED: {exc}")
            timings[name] = round(time.perf_counter() - started, 1)
    finally:
        ctx.close()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    facts["load_average_after"] = machine_facts()["load_average"]
    results = {
        "smoke": args.smoke,
        "machine": facts,
        "measures": [r.to_json() for r in rows],
        "failed": failures,
        "group_seconds": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(table(rows))
    for r in rows:
        if r.notes:
            print(f"  {r.name}: {r.notes}")
    for name, error in failures.items():
        print(f"FAILED {name}: {error}")
    print(f"\n{facts['cores']} cores, load {facts['load_average']} → "
          f"{facts['load_average_after']}; results in {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
