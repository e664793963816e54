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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..config import (
    AgentSpec,
    ConfigFile,
    Pipeline,
    PipelineSpec,
    build_pipeline,
    load_config,
    select_spec,
    with_overrides,
)
from ..engine import Engine
from ..policy import METHODS
from ..trace import Trace
from ..types import ConfigError
from .item import SCORING_FAILED, method_cost, run_one, score_row  # noqa: F401 (method_cost: part of the API)
from .store import ResultsStore, Row

# Sampling overrides that the CLI and the API pass through to every pipeline.
OVERRIDE_KEYS = ("n", "k", "max_rounds", "seed", "max_tokens", "temperature")

EVAL_TASK = "Answer each question of this benchmark correctly; follow its answer format exactly."


@dataclass
class EvalSettings:
    """Everything a worker needs to rebuild the pipelines and score items (plain, picklable)."""

    benchmark: str
    methods: list[str]
    data: str | None = None
    limit: int | None = None
    offset: int = 0
    config: ConfigFile | None = None
    config_path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    judge_backend: str | None = None
    judge_model: str | None = None
    judge_max_tokens: int = 512
    concurrency: int = 8
    cache: bool = False  # the response cache: off, so every run pays (and measures) its calls
    roles: dict[str, list[str]] = field(default_factory=dict)  # method -> roles, fixed per run
    run_id: str = ""

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("config", None)
        d.pop("roles", None)
        return d


# ---------------------------------------------------------------------------
# benchmarks (adapter over smoa.eval.benchmarks)


def get_benchmark(name: str) -> Any:
    from . import benchmarks as bm

    getter = getattr(bm, "get_benchmark", None)
    if getter is None:  # registry not there yet: the math sets are
        from .benchmarks.math import GSM8K, Math500, MMAUMath

        table = {b.name: b for b in (GSM8K, Math500, MMAUMath)}
        if name not in table:
            raise ConfigError(f"unknown benchmark {name!r}: use one of {', '.join(table)}")
        return table[name]()
    try:
        b = getter(name)
    except KeyError as e:
        raise ConfigError(str(e).strip("'\"")) from None
    return b() if isinstance(b, type) else b


def benchmark_names() -> list[str]:
    from . import benchmarks as bm

    reg = getattr(bm, "BENCHMARKS", None)
    return sorted(reg) if reg else ["gsm8k", "math500", "mmau-math"]


def default_data_path() -> str | None:
    """$SMOA_DATA_DIR, else ../shared/data next to the working directory if it exists."""
    env = os.environ.get("SMOA_DATA_DIR")
    if env:
        return env
    for base in (Path.cwd(), *Path.cwd().parents[:2]):
        cand = base / ".." / "shared" / "data"
        if cand.is_dir():
            return str(cand.resolve())
    return None


def load_items(settings: EvalSettings, bench: Any | None = None) -> list[Any]:
    bench = bench or get_benchmark(settings.benchmark)
    try:
        items = bench.load(settings.data or default_data_path(), limit=settings.limit, offset=settings.offset)
    except FileNotFoundError as e:
        raise ConfigError(f"{e}: pass --data with the folder that holds the sets (or set SMOA_DATA_DIR)") from None
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{settings.benchmark}: item ids are not unique; the results store needs unique ids")
    return items


# ---------------------------------------------------------------------------
# pipelines


def _spec_for(cfg: ConfigFile | None, method: str, overrides: dict[str, Any], bench: Any) -> tuple[str, PipelineSpec]:
    """The pipeline for one method label: a pipeline of that name in the config, else the
    config's default pipeline (its agents and backends) switched to that method, else the preset."""
    if cfg is not None and method in cfg.pipelines:
        name, spec = select_spec(cfg, method)
    elif method in METHODS:
        name, spec = select_spec(cfg, None, method)
        name = method
    else:
        known = list(METHODS) + (list(cfg.pipelines) if cfg else [])
        raise ConfigError(f"unknown method or pipeline {method!r}: use one of {', '.join(known)}")
    # the same config drives every method: keep only what this method's policy takes
    policy = spec.policy(f"pipelines.{name}")
    upd: dict[str, Any] = {}
    if spec.roles is not None and not policy.uses_roles:
        upd["roles"] = None  # given roles belong to the role-playing methods, like k to the sparse ones
    if not policy.sparse and spec.k is not None:
        upd["k"] = None
    if policy.one_shot:
        upd["n"] = None
    if policy.one_model and len(spec.proposers) > 1:
        upd["proposers"] = spec.proposers[:1]
    if upd:
        spec = spec.model_copy(update=upd)
    ov = {k: v for k, v in overrides.items() if v is not None}
    if not policy.sparse:
        ov.pop("k", None)
    if policy.one_shot:
        ov.pop("n", None)
        ov.pop("max_rounds", None)
    from ..config import DEFAULT_DATASET, DEFAULT_TASK

    if spec.dataset == DEFAULT_DATASET and getattr(bench, "description", ""):
        ov.setdefault("dataset", f"{bench.name}: {bench.description}")
    if spec.task == DEFAULT_TASK:
        ov.setdefault("task", EVAL_TASK)
    return name, with_overrides(spec, **ov)


def build_pipelines(
    settings: EvalSettings, bench: Any, instances: dict[str, Backend] | None = None
) -> tuple[dict[str, Pipeline], dict[str, Backend]]:
    """One live pipeline per method label. Raw backend objects are shared by all of them (the
    returned pool); every agent wraps them in its own retry and fallback policy."""
    cfg = settings.config
    shared: dict[str, Backend] = {}
    pipes: dict[str, Pipeline] = {}
    for m in settings.methods:
        name, spec = _spec_for(cfg, m, settings.overrides, bench)
        if m in settings.roles and spec.roles is None:
            spec = with_overrides(spec, roles=list(settings.roles[m]))
        pipes[m] = build_pipeline(spec, name=name, backends=cfg.backends if cfg else None, instances=instances,
                                  cache=settings.cache, pool=shared)
    return pipes, shared


def build_judge(settings: EvalSettings, shared: dict[str, Backend], given: dict[str, Backend] | None = None) -> Any:
    """The evaluation judge (for LLM-judged sets): its own backend and model, temperature 0.
    Default: the embedded model. It is not one of the method's agents and its tokens are
    kept apart from the method's cost."""
    cfg = settings.config
    agent = AgentSpec(
        backend=settings.judge_backend or "local", model=settings.judge_model,
        temperature=0.0, max_tokens=settings.judge_max_tokens,
    )
    spec = PipelineSpec(method="single", agent=agent, seed=0)
    pipe = build_pipeline(spec, name="eval-judge", backends=cfg.backends if cfg else None, instances=given,
                          cache=settings.cache, pool=shared)
    return pipe.proposers[0]


async def prepare_roles(
    settings: EvalSettings, pipes: dict[str, Pipeline], store: ResultsStore | None
) -> dict[str, list[str]]:
    """Generate each role-playing method's roles once per (benchmark, method) and keep them in
    the store, so every item, worker and resumed run uses the same roles. The generation's cost
    is a one-off (recorded in the store's setup table), not charged to every item."""
    out: dict[str, list[str]] = {}
    for m, pipe in pipes.items():
        if not pipe.policy.uses_roles or pipe.roles is not None or all(a.role for a in pipe.proposers):
            continue
        saved = store.get_setup(settings.benchmark, m, "roles") if store else None
        if saved and len(saved.get("roles", [])) == pipe.n:
            out[m] = saved["roles"]
            continue
        tr = Trace(method="roles")
        eng = Engine(pipe)
        got = await eng.assign_roles(tr, pipe.policy)
        roles = [r or "" for r in got]
        out[m] = roles
        if store is not None:
            store.put_setup(settings.benchmark, m, "roles", {
                "roles": roles, "source": tr.config.get("roles_source"),
                "fallback": tr.config.get("roles_fallback", 0), "cost": tr.cost(),
            })
    return out


# ---------------------------------------------------------------------------
# many items


async def run_work(
    settings: EvalSettings,
    work: Sequence[tuple[int, Any, str]],
    on_row: Callable[[Row], Any],
    instances: dict[str, Backend] | None = None,
    bench: Any | None = None,
) -> None:
    """Run (index, item, method) triples concurrently under settings.concurrency;
    call `on_row` with each finished row as soon as it is done."""
    bench = bench or get_benchmark(settings.benchmark)
    pipes, shared = build_pipelines(settings, bench, instances)
    judge = build_judge(settings, shared, instances) if getattr(bench, "needs_judge", False) else None
    sem = asyncio.Semaphore(max(1, settings.concurrency))

    async def one(index: int, item: Any, method: str) -> None:
        async with sem:
            row = await run_one(bench, item, index, method, pipes[method], judge, settings.run_id)
        r = on_row(row)
        if asyncio.iscoroutine(r):
            await r

    try:
        await asyncio.gather(*(one(i, it, m) for i, it, m in work))
    finally:
        await close_backends(shared, instances)


async def close_backends(shared: dict[str, Backend], given: dict[str, Backend] | None) -> None:
    """Close the backends the runner made (never the caller's own instances)."""
    keep = {id(b) for b in (given or {}).values()}
    for be in {id(b): b for b in shared.values()}.values():
        if id(be) in keep:
            continue
        try:
            await be.aclose()
        except Exception:
            pass


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

    overrides: n, k, max_rounds, seed (default 0, so runs are reproducible), max_tokens, temperature.
    """
    from .executors import get_executor
    from .progress import Progress

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("no methods: give e.g. --methods single,moa,smoa")
    bad = [k for k in overrides if k not in OVERRIDE_KEYS]
    if bad:
        raise ConfigError(f"unknown option(s) {', '.join(bad)}: use {', '.join(OVERRIDE_KEYS)}")
    overrides.setdefault("seed", 0)
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
