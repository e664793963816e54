"""Benchmark loaders and scorers, and the registry ``BENCHMARKS``.

Every benchmark loads from a path that may be the shared data root (``.../shared/data``), the
set's own folder, or (for single-file sets) the file itself::

    bench = get_benchmark("gsm8k")
    items = bench.load("/path/to/shared/data", limit=100)
    score = bench.score(items[0], model_answer)          # rule-based sets
    # LLM-judged sets (bench.needs_judge): judge_messages -> judge model -> parse_verdict
"""

from __future__ import annotations

from .base import (
    Benchmark,
    Item,
    JudgedBenchmark,
    JudgeRequired,
    Score,
    default_data_root,
)
from .bfcl import BFCL, BFCL_CATEGORIES, BFCL_MODES, calls_to_text, check_calls, parse_calls
from .code import MBPP, HumanEval, humaneval_program, mbpp_program
from .judged import CEB, AlpacaEval, JustEval, MTBench, parse_pairwise, parse_rating
from .math import GSM8K, Math500, MMAUMath, extract_math_answer, extract_mmau_answer

__all__ = [
    "Item", "Score", "Benchmark", "JudgedBenchmark", "JudgeRequired", "default_data_root",
    "BENCHMARKS", "get_benchmark", "UnknownBenchmarkError",
    "GSM8K", "Math500", "MMAUMath", "HumanEval", "MBPP", "BFCL", "JustEval", "CEB", "MTBench",
    "AlpacaEval", "BFCL_CATEGORIES", "BFCL_MODES", "bfcl_benchmark_name", "parse_calls",
    "check_calls", "calls_to_text",
    "humaneval_program", "mbpp_program", "parse_rating", "parse_pairwise",
    "extract_math_answer", "extract_mmau_answer",
]


def _build() -> dict[str, Benchmark]:
    benches: list[Benchmark] = [
        GSM8K(), Math500(), MMAUMath(), HumanEval(), MBPP(), BFCL(),
        *(BFCL((c,), name=f"bfcl-{c}") for c in BFCL_CATEGORIES),
        BFCL(name="bfcl-lenient", mode="lenient"),
        *(BFCL((c,), name=f"bfcl-lenient-{c}", mode="lenient") for c in BFCL_CATEGORIES),
        JustEval(), CEB(), MTBench(), MTBench("pairwise", name="mt-bench-pairwise"),
        AlpacaEval(),
    ]
    return {b.name: b for b in benches}


BENCHMARKS: dict[str, Benchmark] = _build()


class UnknownBenchmarkError(ValueError, KeyError):
    """Unknown benchmark name (a ValueError; also a KeyError for dict-style callers)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def bfcl_benchmark_name(name: str, mode: str) -> str:
    """The registered name of BFCL benchmark ``name`` scored in ``mode`` (official/lenient):
    ``bfcl-parallel`` + lenient -> ``bfcl-lenient-parallel``. Other benchmarks: ``name``."""
    if mode not in BFCL_MODES:
        raise UnknownBenchmarkError(f"unknown BFCL mode {mode!r}; known: {', '.join(BFCL_MODES)}")
    key = name.strip().lower().replace("_", "-")
    if not key.startswith("bfcl"):
        return name
    rest = key[len("bfcl"):].removeprefix("-").removeprefix("lenient").removeprefix("-")
    parts = ["bfcl"] + (["lenient"] if mode == "lenient" else []) + ([rest] if rest else [])
    return "-".join(parts)


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name`` (case-insensitive; '_' and '-' alike).
    Raises :class:`UnknownBenchmarkError` (a ValueError) listing the known names."""
    key = name.strip().lower().replace("_", "-")
    for k, b in BENCHMARKS.items():
        if k.replace("_", "-") == key:
            return b
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
