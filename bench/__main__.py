"""python -m bench [--quick] [--only NAME] [--json PATH] [--plot DIR]"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from .common import Context, Figure, print_progress

SUITES = ("rtt", "throughput", "fanout", "wheel", "guarantee", "expiry", "mqtt", "durability",
          "fairness", "ocpp")


def format_value(value: float) -> str:
    if value == float("inf"):
        return "inf"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_table(suite: str, figures: list[Figure]) -> None:
    print(f"\n== {suite} ==")
    second = any(f.second_baseline for f in figures)
    header = ("figure", "unit", "median", "min", "max", "baseline", "baseline median", "ratio",
              *(("2nd baseline", "2nd median", "2nd ratio") if second else ()), "target")
    rows = [header]
    for f in figures:
        target = "" if f.target_met is None else f"{f.goal()} {'ok' if f.target_met else 'MISSED'}"
        columns = ()
        if second:
            columns = ((f.second_baseline, format_value(f.second_baseline_median),
                        f"{f.second_ratio:.2f}x") if f.second_baseline else ("", "", ""))
        rows.append((f.name, f.unit, format_value(f.median), format_value(min(f.samples)),
                     format_value(max(f.samples)), f.baseline, format_value(f.baseline_median),
                     f"{f.ratio:.2f}x", *columns, target))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for f in figures:
        if f.note:
            print(f"  note: {f.name}: {f.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="Benchmark the reservation actor against its baselines.")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions (CI)")
    parser.add_argument("--only", choices=SUITES, action="append", help="run only this suite (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNG charts (needs the bench extra: matplotlib)")
    args = parser.parse_args(argv)
    context = Context(quick=args.quick, progress=print_progress)
    figures: list[Figure] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    for name in args.only or SUITES:
        print_progress(f"suite {name}")
        suite = importlib.import_module(f"bench.suites.{name}")
        missing = suite.unavailable() if hasattr(suite, "unavailable") else None
        if missing:
            skipped[name] = missing
            print(f"\n== {name} ==\n  skipped: {missing}")
            continue
        results = suite.run(context)
        print_table(name, results)
        figures.extend(results)
    targets = [f for f in figures if f.target_met is not None]
    print(f"\n== summary ({time.monotonic() - started:.0f} s) ==")
    for f in targets:
        versus = f"{f.ratio:.2f}x {f.baseline}"
        if f.second_baseline:
            versus += f", {f.second_ratio:.2f}x {f.second_baseline}"
        print(f"  {'ok    ' if f.target_met else 'MISSED'}  {f.suite}: {f.name}: "
              f"{format_value(f.median)} {f.unit}, {versus} (goal {f.goal()})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"quick": args.quick, "skipped": skipped,
                       "figures": [f.to_json() for f in figures]}, out, indent=1)
    if args.plot:
        from .plot import write_charts
        write_charts(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
