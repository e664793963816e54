"""Run the benchmarks and print each figure next to its target.

    PYTHONPATH=src python -m bench                 # all of them
    PYTHONPATH=src python -m bench critical cache  # some
    PYTHONPATH=src python -m bench --quick         # smaller sizes, for a smoke test
    PYTHONPATH=src python -m bench --json out.json # also write every number as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .common import machine

NAMES = ("critical", "throughput", "library", "clients", "batched", "steps", "cost", "cache", "hijack", "startup", "prefix",
         "concurrent")


def _run(name: str, quick: bool) -> tuple[dict[str, Any], str]:
    if name == "critical":
        from . import critical as m

        res = m.run(repeats=3 if quick else 7)
    elif name == "throughput":
        from . import throughput as m

        res = m.run(queries=100 if quick else 500, memory_sizes=(20, 100) if quick else m.MEMORY_SIZES)
    elif name == "library":
        from . import library as m

        res = m.run(queries=100 if quick else 500)
    elif name == "clients":
        from . import clients as m

        res = m.run(calls=500 if quick else 3000, rounds=1 if quick else 2)
    elif name == "batched":
        from . import batched as m

        res = m.run(tokens=32 if quick else 96, repeats=1 if quick else 3)
    elif name == "steps":
        from . import steps as m

        res = m.run(steps=10 if quick else 30)
    elif name == "cost":
        from . import cost as m

        res = m.run(items=5 if quick else 50)
    elif name == "cache":
        from . import cache as m

        res = m.run(items=10 if quick else 50)
    elif name == "hijack":
        from . import hijack as m

        res = m.run(seeds=2 if quick else 4)
    elif name == "startup":
        from . import startup as m

        res = m.run(repeats=3 if quick else 7)
    elif name == "prefix":
        from . import prefix as m

        res = m.run(queries=2 if quick else 3, quick=quick)
    elif name == "concurrent":
        from . import concurrent as m

        res = m.run(queries=2 if quick else 4, repeats=1 if quick else 3)
    else:
        raise SystemExit(f"unknown benchmark {name!r}: use {', '.join(NAMES)}")
    return res, m.report(res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(NAMES)}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test, not figures to quote")
    ap.add_argument("--json", dest="json_out", help="write all results to this JSON file")
    a = ap.parse_args(argv)
    names = a.names or list(NAMES)
    bad = [n for n in names if n not in NAMES]
    if bad:
        ap.error(f"unknown benchmark(s) {', '.join(bad)}: use {', '.join(NAMES)}")
    info = machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu']}; {info['simd']}), Python {info['python']}{'  [quick]' if a.quick else ''}")
    results: dict[str, Any] = {"machine": info, "quick": a.quick}
    for name in names:
        t0 = time.perf_counter()
        res, text = _run(name, a.quick)
        res["bench_s"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        print(text)
        print(f"  ({name}: {res['bench_s']} s)")
        sys.stdout.flush()
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
