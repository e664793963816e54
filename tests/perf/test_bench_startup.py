"""`python -m bench startup` measures what it says: real processes, and a trace read back.

No timing target is asserted here (targets live in BENCHMARKS.md); only facts that hold on any
machine: every figure is a positive time, and `smoa ask` cannot take less time than the query
its own trace records."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import startup  # noqa: E402


def test_startup_bench_reads_real_runs():
    res = startup.run(repeats=1)
    assert set(res["median_s"]) == {"python -c pass", startup.LIBS, "smoa --help", "smoa ask --help"}
    assert all(v > 0 for v in res["median_s"].values())
    # the process includes the traced query, so its wall is at least the trace's
    assert res["ask_over_trace"] >= 1.0
    assert res["ask_wall_s"] >= 0.2  # 13 calls over 2 layers of a 0.1 s server: 4 stages at least
    # the libraries' floor is the ratio smoa would have if it added nothing: above 1 by construction
    assert res["libs_over_trace"] > 1.0
    assert "smoa ask over its trace's wall" in startup.report(res)
