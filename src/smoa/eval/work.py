"""What one worker runs: the evaluation settings (plain data), the pipelines rebuilt from
them, and `run_work` over (index, item, method) triples. The runner (smoa.eval.runner) and
the executors (smoa.eval.executors, which run this in this process or in Ray tasks) both
import this module; it imports neither, so there is no cycle.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..config import (
    DEFAULT_DATASET,
    DEFAULT_TASK,
    AgentSpec,
    ConfigFile,
    Pipeline,
    PipelineSpec,
    build_pipeline,
    select_spec,
    with_overrides,
)
from ..engine import Engine
from ..policy import METHODS
from ..trace import Trace
from ..types import ConfigError
from .item import run_one
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

    try:
        b = bm.get_benchmark(name)
    except KeyError as e:
        raise ConfigError(str(e).strip("'\"")) from None
    return b() if isinstance(b, type) else b


def benchmark_names() -> list[str]:
    from . import benchmarks as bm

    return sorted(bm.BENCHMARKS)


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
    if "seed" not in ov and spec.seed is None:
        ov["seed"] = 0  # reproducible by default; a pipeline's own seed is kept unless --seed is given
    if not policy.sparse:
        ov.pop("k", None)
    if policy.one_shot:
        ov.pop("n", None)
        ov.pop("max_rounds", None)
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


def build_judge(settings: EvalSettings, shared: dict[str, Backend], given: dict[str, Backend] | None = None) -> Pipeline:
    """The evaluation judge (for LLM-judged sets): a one-call ("single") pipeline on its own
    backend and model, temperature 0; the judge is its proposer. Default: the embedded model.
    It is not one of the method's agents and its tokens are kept apart from the method's cost."""
    cfg = settings.config
    agent = AgentSpec(
        backend=settings.judge_backend or "local", model=settings.judge_model,
        temperature=0.0, max_tokens=settings.judge_max_tokens,
    )
    spec = PipelineSpec(method="single", agent=agent, seed=0)
    pipe = build_pipeline(spec, name="eval-judge", backends=cfg.backends if cfg else None, instances=given,
                          cache=settings.cache, pool=shared)
    return pipe


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
