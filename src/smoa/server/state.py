"""What a running server holds: its pipelines (validated once, backends shared) and the
per-process state every route reads (`request.app.state.smoa`): options, trace store, admission."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..backends.base import Backend
from ..config import ConfigFile, Pipeline, pipeline_names, resolve
from ..trace import Trace
from ..tracestore import MemoryStore, Store, TraceStore, default_path
from ..types import ConfigError
from .admission import Admission
from .settings import ServerOptions

log = logging.getLogger("smoa.server")


class Pipelines:
    """The models this server offers. Built once at start-up to validate them and share backends."""

    def __init__(self, cfg: ConfigFile | None, instances: dict[str, Backend] | None = None) -> None:
        self.cfg = cfg
        self.given: dict[str, Backend] = dict(instances or {})  # the caller's, used as given
        # raw backends made from the config, shared by every pipeline and request; each agent
        # wraps them in its own retry/fallback policy (a wrapped one here would leak an agent's
        # fallback to every other agent on that backend)
        self.pool: dict[str, Backend] = {}
        self.available: list[str] = []
        self.broken: dict[str, str] = {}
        self.info: dict[str, dict[str, Any]] = {}
        for name in pipeline_names(cfg):
            try:
                p = resolve(cfg, pipeline=name, instances=self.given, pool=self.pool)
            except ConfigError as e:
                self.broken[name] = str(e)
                continue
            self.available.append(name)
            spec = cfg.pipelines.get(name) if cfg is not None else None
            stages = stages_of(p)
            self.info[name] = {
                "method": p.method, "n": p.n, "k": p.k, "max_rounds": p.max_rounds, "policy": p.policy.describe(),
                "description": (spec.description if spec is not None else "") or describe_pipeline(p, stages),
                "stages": stages,
                "proposers": [f"{a.backend_name}:{a.model}" for a in p.proposers],
                "aggregator": f"{p.aggregator.backend_name}:{p.aggregator.model}",
            }

    @property
    def instances(self) -> dict[str, Backend]:
        """Every backend object the server holds (given and made), by name."""
        return {**self.pool, **self.given}

    def build(self, name: str, **overrides: Any) -> Pipeline:
        return resolve(self.cfg, pipeline=name, instances=self.given, pool=self.pool, **overrides)


def _runs_on(a: Any) -> str:
    """'<backend name> (<kind>: <where>) model <model>': what one agent really calls."""
    from ..redaction import redact

    return redact(f"{a.backend_name} ({a.backend.describe()}) model {a.model}")


def stages_of(p: Pipeline) -> dict[str, Any]:
    """The stages this pipeline's policy uses, each with the backend and model it runs on."""
    from ..policy import Finish, Forward, Stop

    policy = p.policy
    out: dict[str, Any] = {"proposers": sorted({_runs_on(a) for a in p.proposers})}
    if policy.uses_roles and p.roles is None and any(a.role is None for a in p.proposers):
        out["role_generator"] = _runs_on(p.role_generator)
    if policy.forward is Forward.JUDGE:
        out["judge"] = _runs_on(p.judge)
    if Stop.MODERATOR in policy.stop or (Stop.VERDICT in policy.stop and policy.forward is not Forward.JUDGE):
        out["moderator"] = _runs_on(p.moderator)
    if policy.finish in (Finish.AGGREGATE, Finish.VOTE):
        out["aggregator"] = _runs_on(p.aggregator)
    return out


def describe_pipeline(p: Pipeline, stages: dict[str, Any]) -> str:
    if p.policy.one_shot:
        shape = "one call"
    elif p.policy.sparse:
        shape = f"{p.n} proposers, judge keeps {p.k}, up to {p.max_rounds} rounds"
    else:
        shape = f"{p.n} proposers, {p.max_rounds} round(s)"
    parts = [f"{stage}: {', '.join(v) if isinstance(v, list) else v}" for stage, v in stages.items()]
    return f"{p.method} ({shape}); " + "; ".join(parts)


class ServerState:
    """Everything the routes read, made once per app by `create_app` (`app.state.smoa`)."""

    def __init__(self, pipelines: Pipelines, options: ServerOptions, store: Store, warm_up: bool = True) -> None:
        self.pipelines = pipelines
        self.options = options
        self.store = store
        self.warm_up = warm_up  # load embedded models at start-up (tests turn it off)
        self.admission = Admission(options.max_in_flight, options.max_queue, options.queue_timeout_s)
        self.started = int(time.time())

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def release(self, duration_s: float | None = None) -> None:
        self.admission.release(duration_s)

    async def save_trace(self, trace: Trace) -> None:
        try:
            await asyncio.to_thread(self.store.save, trace.to_dict(), "server")
        except Exception as e:  # a full disk must not fail the query
            log.warning("could not save trace %s: %s", trace.id, e)


def make_store(options: ServerOptions) -> Store:
    if not options.save_traces:
        return MemoryStore()
    return TraceStore(options.trace_store or default_path())
