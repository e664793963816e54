"""The evaluation runner: every (item, method) of a benchmark through the engine, scored,
written at once to the results store; a rerun resumes where the last one stopped.

    from smoa.eval import run_eval
    summary = run_eval("gsm8k", ["single", "moa", "smoa"], data="../shared/data", limit=20, out="runs/g")

Work runs concurrently under one global limit (an asyncio semaphore shared by all items and
methods); each backend's own `max_concurrency` still holds across all of them. What a
worker needs travels in `EvalSettings` (plain data), so the Ray executor can rebuild the
same pipelines in another process and the store ends up identical.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..config import ConfigFile, load_config
from ..types import ConfigError
from .executors import get_executor
from .item import SCORING_FAILED, method_cost, score_row  # noqa: F401 (method_cost: part of the API)
from .progress import Progress
from .store import ResultsStore, Row

# the worker's part, re-exported: the runner's public API before the split
from .work import (  # noqa: F401
    EVAL_TASK,
    OVERRIDE_KEYS,
    EvalSettings,
    benchmark_names,
    build_judge,
    build_pipelines,
    close_backends,
    default_data_path,
    get_benchmark,
    load_items,
    prepare_roles,
    run_work,
)


async def rescore_failed(store: ResultsStore, bench: Any, items: Sequence[Any], methods: Sequence[str], judge: Any | None) -> int:
    """Rows whose answer is there but whose scoring crashed are scored again from the stored
    answer (a fixed scorer needs no new model calls). Returns how many now have a score."""
    by_id = {it.id: it for it in items}
    fields = set(Row.__dataclass_fields__)
    fixed = 0
    for m in methods:
        for d in list(store.rows(bench.name, m, with_trace=True)):
            if not (d["error"] or "").startswith(SCORING_FAILED) or d["answer"] is None or d["item_id"] not in by_id:
                continue
            row = Row(**{k: v for k, v in d.items() if k in fields})
            tr = row.trace or {}
            answers = [t.get("answer", "") for t in tr["turns"]] if "turns" in tr else [row.answer or ""]
            row.error = None
            try:
                await score_row(bench, by_id[row.item_id], row, answers, judge)
            except Exception as e:
                row.error = f"{SCORING_FAILED} {type(e).__name__}: {e}"
            if row.error is None and store.put(row):
                fixed += 1
    return fixed


def plan_work(items: Sequence[Any], methods: Sequence[str], store: ResultsStore, benchmark: str, offset: int = 0) -> list[tuple[int, Any, str]]:
    """What is left to do: per item, every method not finished yet (item-major, so a partial
    run has comparable items across methods)."""
    # a row whose scorer crashed has a good answer: it waits for a fixed scorer, not a new answer
    done = {m: store.done(benchmark, m) | store.with_error(benchmark, m, SCORING_FAILED) for m in methods}
    return [(offset + i, it, m) for i, it in enumerate(items) for m in methods if it.id not in done[m]]


async def arun_eval(
    benchmark: str,
    methods: Sequence[str] | str = ("single", "moa", "smoa"),
    *,
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "eval-out",
    limit: int | None = None,
    offset: int = 0,
    config: str | os.PathLike[str] | ConfigFile | None = None,
    concurrency: int = 8,
    executor: str = "local",
    judge_backend: str | None = None,
    judge_model: str | None = None,
    judge_max_tokens: int = 512,
    cache: bool = False,
    backends: dict[str, Backend] | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate `methods` on `benchmark`; results go to OUT/results.sqlite. Returns a summary.

    overrides: n, k, max_rounds, seed, max_tokens, temperature. Without a seed each pipeline
    keeps its own (`seed` in the config), and one that has none gets 0, so runs are reproducible.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("no methods: give e.g. --methods single,moa,smoa")
    bad = [k for k in overrides if k not in OVERRIDE_KEYS]
    if bad:
        raise ConfigError(f"unknown option(s) {', '.join(bad)}: use {', '.join(OVERRIDE_KEYS)}")
    cfg_path = str(config) if isinstance(config, str | os.PathLike) else None
    cfg = load_config(config) if isinstance(config, str | os.PathLike) else config
    settings = EvalSettings(
        benchmark=benchmark, methods=methods, data=str(data) if data is not None else None, limit=limit,
        offset=offset, config=cfg, config_path=cfg_path, overrides=dict(overrides),
        judge_backend=judge_backend, judge_model=judge_model, judge_max_tokens=judge_max_tokens,
        concurrency=concurrency, cache=cache, run_id=uuid.uuid4().hex[:12],
    )
    bench = get_benchmark(benchmark)
    getattr(bench, "check_ready", lambda: None)()  # e.g. code sets: is the sandbox there?
    items = load_items(settings, bench)
    # validate every pipeline before any work starts (one clear error for a bad config)
    pipes, shared = build_pipelines(settings, bench, backends)
    ex = get_executor(executor)
    t0 = time.time()
    with ResultsStore(out, exclusive=True) as store:  # one eval per folder: a second is refused
        judge = build_judge(settings, shared, backends) if getattr(bench, "needs_judge", False) else None
        rescored = await rescore_failed(store, bench, items, methods, judge)
        work = plan_work(items, methods, store, bench.name, offset)
        total = len(items) * len(methods)
        skipped = total - len(work)
        store.start_run(settings.run_id, bench.name, methods, settings.describe())
        settings.roles = await prepare_roles(settings, pipes, store) if work else {}
        await close_backends(shared, backends)
        bar = Progress(total=total, done=skipped, label=f"{bench.name} [{','.join(methods)}]", enabled=progress)
        written = errors = 0

        def on_row(row: Row) -> None:
            nonlocal written, errors
            if store.put(row):
                written += 1
            errors += 1 if row.error else 0
            bar.update(row)

        try:
            await ex.run(settings, work, on_row, instances=backends, bench=bench, chunk_size=chunk_size)
        finally:
            bar.close()
        summary = {
            "out": str(Path(out)),
            "store": str(store.path),
            "benchmark": bench.name,
            "methods": methods,
            "items": len(items),
            "total": total,
            "skipped": skipped,
            "ran": len(work),
            "rescored": rescored,
            "written": written,
            "errors": errors,
            "wall_s": round(time.time() - t0, 3),
            "executor": executor,
            "run_id": settings.run_id,
            "per_method": quick_summary(store, bench.name, methods),
        }
        store.finish_run(settings.run_id, summary)
    return summary


def run_eval(benchmark: str, methods: Sequence[str] | str = ("single", "moa", "smoa"), **kwargs: Any) -> dict[str, Any]:
    """`arun_eval` for code without an event loop (and the CLI)."""
    return asyncio.run(arun_eval(benchmark, methods, **kwargs))


def quick_summary(store: ResultsStore, benchmark: str, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        rows = [r for r in store.rows(benchmark, m) if r["error"] is None]
        scores = [r["score"] for r in rows if r["score"] is not None]
        out[m] = {
            "n": len(rows),
            "errors": store.count(benchmark, m, errors=True),
            "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
            "tokens_per_item": round(sum(r["total_tokens"] for r in rows) / len(rows), 1) if rows else None,
        }
    return out


def print_summary(summary: dict[str, Any], stream: Any = None) -> None:
    stream = stream or sys.stderr
    print(
        f"{summary['benchmark']}: {summary['ran']} ran, {summary['skipped']} already done, "
        f"{summary['errors']} errors, {summary['wall_s']:.1f} s -> {summary['store']}",
        file=stream,
    )
    for m, s in summary["per_method"].items():
        ms = "-" if s["mean_score"] is None else f"{s['mean_score']:.3f}"
        tk = "-" if s["tokens_per_item"] is None else f"{s['tokens_per_item']:.0f}"
        print(f"  {m:<10} n={s['n']:<5} score={ms:<7} tokens/item={tk:<8} errors={s['errors']}", file=stream)
