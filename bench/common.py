"""Helpers shared by the benchmarks: the fake server, pipelines on it, ratios from traces."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from typing import Any

from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline
from smoa.testing import ServerProcess
from smoa.trace import Trace


@contextmanager
def fake_server(latency_s: float):
    """A real OpenAI-compatible server in a subprocess on 127.0.0.1 (see smoa.fakeserver)."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = ["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", str(latency_s)]
    with ServerProcess(argv, env=env) as srv:
        yield srv


@contextmanager
def private_cache_dir():
    """Role and response caches in a throw-away folder: benchmarks never read the user's cache."""
    old = os.environ.get("SMOA_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="smoa-bench-") as d:
        os.environ["SMOA_CACHE_DIR"] = d
        try:
            yield d
        finally:
            if old is None:
                os.environ.pop("SMOA_CACHE_DIR", None)
            else:
                os.environ["SMOA_CACHE_DIR"] = old


def http_pipeline(base_url: str, method: str, n: int, rounds: int, k: int | None = None, **backend: Any):
    spec = PipelineSpec(
        method=method, n=n, k=k, max_rounds=rounds, seed=1,
        agent=AgentSpec(backend="fake", model="fake-model", max_tokens=64),
    )
    backends = {"fake": BackendSpec(type="openai", base_url=base_url, max_retries=0, **backend)}
    return build_pipeline(spec, name=f"bench-{method}", backends=backends, cache=False)


def critical_path_s(trace: Trace) -> float:
    """Sum over stages (stage, layer) of the slowest call: the least wall time the calls allow."""
    slowest: dict[tuple[str, int], float] = {}
    for c in trace.calls:
        key = (c.stage, c.layer)
        slowest[key] = max(slowest.get(key, 0.0), c.latency_s)
    return sum(slowest.values())


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def machine() -> dict[str, Any]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from smoa.backends.batchcheck import cpu_simd

    # ggml picks its kernels by instruction set: every run names the flags it ran with
    return {"cpus": os.cpu_count(), "cpu": model or platform.processor(), "simd": cpu_simd(),
            "python": platform.python_version()}


def verdict(value: float, target: float, op: str) -> str:
    ok = value <= target if op == "<=" else value >= target
    return "MET" if ok else "NOT MET"


def line(name: str, value: float, target: float | None = None, op: str = "<=", fmt: str = "{:.3f}", note: str = "") -> str:
    s = f"  {name:<44} {fmt.format(value):>10}"
    if target is not None:
        s += f"   target {op} {fmt.format(target):<8} {verdict(value, target, op)}"
    if note:
        s += f"   ({note})"
    return s
