"""CLI start-up (issue 15 item 3): what the `smoa` command costs before its first call.

Each command runs as a fresh process, interleaved with the others, and the figures are
medians. The targets: `smoa --help` and `smoa ask --help` under 0.15 s, and `smoa ask` against
a 0.1 s test server under 1.15x the wall time its own trace records (smoa, n=4, k=2, 2 rounds,
roles given, so 13 calls and no role generation). `python -c pass` is the floor on the same
machine: an interpreter that starts in 0.2 s cannot meet a 0.15 s target, whatever smoa does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import fake_server, line, median

ROLES = ["a careful checker", "a fast estimator", "a patient teacher", "a sceptical editor"]


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _config(base_url: str) -> str:
    roles = ", ".join(json.dumps(r) for r in ROLES)
    return (
        f'[backends.fake]\ntype = "openai"\nbase_url = "{base_url}"\nmax_retries = 0\n\n'
        f'[pipelines.smoa]\nmethod = "smoa"\nn = 4\nk = 2\nmax_rounds = 2\nseed = 1\nroles = [{roles}]\n'
        'agent = { backend = "fake", model = "fake-model", max_tokens = 64 }\n'
    )


def run(repeats: int = 7) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), SMOA_NO_TRACE_STORE="1")
    py = sys.executable
    smoa = [py, "-m", "smoa"]
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "smoa --help": [*smoa, "--help"],
        "smoa ask --help": [*smoa, "ask", "--help"],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    ask_wall: list[float] = []
    ask_ratio: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smoa-bench-startup-") as d, fake_server(0.1) as srv:
        env["SMOA_CACHE_DIR"] = d
        cfg = Path(d) / "smoa.toml"
        cfg.write_text(_config(srv.base_url), encoding="utf-8")
        trace = Path(d) / "trace.json"
        ask = [*smoa, "ask", "--config", str(cfg), "--no-cache", "--trace", str(trace), "-q", "How many legs has a spider?"]
        _timed(ask, env)  # warm the OS file cache once; not counted
        for _ in range(repeats):
            for name, argv in commands.items():
                times[name].append(_timed(argv, env))
            wall = _timed(ask, env)
            traced = float(json.loads(trace.read_text(encoding="utf-8"))["wall_s"])
            ask_wall.append(wall)
            ask_ratio.append(wall / traced)
    out: dict[str, Any] = {"repeats": repeats, "median_s": {k: round(median(v), 3) for k, v in times.items()}}
    out["ask_wall_s"] = round(median(ask_wall), 3)
    out["ask_over_trace"] = round(median(ask_ratio), 3)
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return out


def report(res: dict[str, Any]) -> str:
    m = res["median_s"]
    return "\n".join([
        f"CLI start-up, medians of {res['repeats']} (1-minute load average {res['load_avg_1m']}):",
        line("python -c pass, s (the floor)", m["python -c pass"]),
        line("smoa --help, s", m["smoa --help"], 0.15),
        line("smoa ask --help, s", m["smoa ask --help"], 0.15),
        line("smoa ask over its trace's wall", res["ask_over_trace"], 1.15,
             note=f"{res['ask_wall_s']:.3f} s; 13 calls, 0.1 s server"),
    ])
