"""Batched against single-sequence logits on the embedded model, per step (issue 10's evidence).

Runs 4 greedy generations as one batch, then replays each sequence's own path alone on the
same context two ways: token by token (1-row decodes, as an unbatched generation runs) and
in one decode with logits at every row (n-row kernels). Prints, per sequence and step, the
max absolute and max relative difference of the logits, and the calibration figure the test
derives its bound from. Usage: python scripts/batch_logits.py [--steps 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform

import llama_cpp

from smoa.backends.batchcheck import compare_batch, cpu_summary
from smoa.backends.local import LocalBackend, get_model
from smoa.types import Request, Settings

ROLES = ("You are a physicist.", "You are a teacher.", "You are an editor who checks facts.", "You are a poet.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    be = LocalBackend()
    m = get_model(be.path, be.n_ctx, be.n_threads)
    reqs = [
        Request(messages=({"role": "system", "content": r}, {"role": "user", "content": "Why is the sky blue?"}),
                model="smollm2", settings=Settings(temperature=0.0, max_tokens=a.steps))
        for r in ROLES
    ]
    with m.lock:
        jobs = [be.job_for(r, m) for r in reqs]
        rep = compare_batch(m.decoder, jobs)
    rep["cpu"] = cpu_summary()
    rep["python"] = platform.python_version()
    rep["llama_cpp"] = llama_cpp.__version__
    if a.json:
        print(json.dumps(rep, indent=1))
        return
    print(f"cpu: {rep['cpu']}")
    print(f"noise floor (1-row against n-row decode of one sequence): {rep['floor']:.4f}; bound {rep['bound']:.4f}")
    for s, seq in enumerate(rep["sequences"]):
        print(f"sequence {s}: {len(seq['steps'])} steps")
        print("  step  |b-1row|max  rel    |b-nrow|max  rel    |1row-nrow|max  argmax ok  single margin")
        for st in seq["steps"]:
            print(f"  {st['step']:4d}  {st['abs_1row']:.4f}  {st['rel_1row']:.2e}  {st['abs_nrow']:.4f}  {st['rel_nrow']:.2e}"
                  f"  {st['abs_floor']:.4f}          {st['argmax_ok']!s:5}      {st['margin']:.4f}")


if __name__ == "__main__":
    main()
