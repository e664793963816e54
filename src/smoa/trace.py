"""The trace: every LLM call of a query, the judge's and moderator's decisions, and cost.

Cost accounting is computed from the trace and nothing else.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

STAGES = ("role", "propose", "judge", "moderate", "aggregate")


@dataclass
class CallRecord:
    id: int
    layer: int  # 0 for calls outside the layered loop (roles), last+1 for aggregation
    stage: str  # one of STAGES
    agent: str
    role: str | None
    backend: str
    model: str
    messages: list[dict[str, str]]
    response: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    started_at: float = 0.0  # seconds since the trace started
    error: str | None = None
    cached: bool = False
    estimated: bool = False  # token counts estimated (the endpoint reported none), not counted
    finish_reason: str | None = None  # the endpoint's: "stop", "length" (max_tokens hit), ...
    prompt_evaluated: int | None = None  # prompt tokens evaluated (embedded model: the rest reused KV)
    decision: dict[str, Any] | None = None
    # reliability (smoa.wrappers): attempts made, the error of each failed attempt, and the
    # fallback agent ("backend:model") that answered instead, if any
    attempts: int = 1
    attempt_errors: list[str] = field(default_factory=list)
    fallback: str | None = None
    # what was asked and who answered, for exporters (smoa.otel): the backend's kind
    # ("openai", "local", ...), the request's sampling settings, and the model the endpoint
    # says answered (None when it did not say)
    provider: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    response_model: str | None = None


@dataclass
class Trace:
    method: str
    pipeline: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    query: list[dict[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    finish: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    wall_s: float = 0.0
    error: str | None = None
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    # -- recording ---------------------------------------------------------
    def new_call(self, **kw: Any) -> CallRecord:
        rec = CallRecord(id=len(self.calls), started_at=time.perf_counter() - self._t0, **kw)
        self.calls.append(rec)
        return rec

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    # -- accounting --------------------------------------------------------
    def cost(self) -> dict[str, Any]:
        return cost_of(self.calls)

    def health(self) -> dict[str, Any]:
        """What went wrong but was survived: retries, dropped proposers, fallbacks."""
        return health_of(self)

    def to_dict(self) -> dict[str, Any]:
        from .redaction import redact_secrets

        d = asdict(self)
        d.pop("_t0", None)
        d["cost"] = self.cost()
        d["health"] = self.health()
        return redact_secrets(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        d = dict(d)
        d.pop("cost", None)
        d.pop("health", None)
        calls = [CallRecord(**c) for c in d.pop("calls", [])]
        t = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "_t0"})
        t.calls = calls
        return t


def cost_of(calls: list[CallRecord]) -> dict[str, Any]:
    """Tokens and calls per stage, and the total. Cached calls count as calls but cost 0 tokens.
    A stage, and the total, whose tokens include estimates (an endpoint that reported none)
    carries `"estimated": True`."""
    by_stage: dict[str, dict[str, float]] = {}
    for c in calls:
        s = by_stage.setdefault(
            c.stage,
            {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "latency_s": 0.0, "errors": 0, "cached": 0},
        )
        s["calls"] += 1
        s["errors"] += 1 if c.error else 0
        s["cached"] += 1 if c.cached else 0
        if not c.cached:
            s["prompt_tokens"] += c.prompt_tokens
            s["completion_tokens"] += c.completion_tokens
            s["total_tokens"] += c.prompt_tokens + c.completion_tokens
        s["latency_s"] = round(s["latency_s"] + c.latency_s, 6)
    total: dict[str, float] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "errors": 0, "cached": 0}
    for s in by_stage.values():
        for k in total:
            total[k] += s[k]
    estimated = {c.stage for c in calls if c.estimated and not c.cached}
    for st in estimated:
        by_stage[st]["estimated"] = True
    ordered = {st: by_stage[st] for st in STAGES if st in by_stage}
    ordered.update({k: v for k, v in by_stage.items() if k not in ordered})
    out: dict[str, Any] = {"by_stage": ordered, "total": total}
    if estimated:
        total["estimated"] = True
    return out


def health_of(t: Trace) -> dict[str, Any]:
    retried = [c for c in t.calls if c.attempts > 1]
    dropped = [
        {"layer": lay.get("layer"), "proposer": p.get("index"), "agent": p.get("agent"), "error": p.get("error")}
        for lay in t.layers for p in lay.get("proposals", []) if not p.get("ok", True)
    ]
    fallbacks = [{"call": c.id, "stage": c.stage, "agent": c.agent, "used": c.fallback} for c in t.calls if c.fallback]
    verdicts = []
    for lay in t.layers:
        for stage in ("judge", "moderator"):
            info = lay.get(stage) or {}
            if info.get("error") or (stage == "judge" and info.get("fallback")):
                verdicts.append({"layer": lay.get("layer"), "stage": stage, "fallback": info.get("fallback"), "error": info.get("error")})
    return {
        "degraded": bool(dropped or fallbacks or verdicts) or t.error is not None,
        "retried_calls": len(retried),
        "retries": sum(c.attempts - 1 for c in retried),
        "failed_calls": sum(1 for c in t.calls if c.error),
        "dropped_proposers": dropped,
        "fallback_agents": fallbacks,
        "verdict_fallbacks": verdicts,
    }


def format_health(h: dict[str, Any]) -> str | None:
    """One line on the faults a query survived (None when there were none)."""
    parts = []
    if h["retries"]:
        parts.append(f"{h['retries']} retries over {h['retried_calls']} calls")
    if h["dropped_proposers"]:
        who = ", ".join(f"layer {d['layer']} proposer {d['proposer'] + 1}" for d in h["dropped_proposers"])
        parts.append(f"dropped {len(h['dropped_proposers'])} failed proposers ({who})")
    if h["fallback_agents"]:
        parts.append("fallback agents answered: " + ", ".join(f"{f['stage']} -> {f['used']}" for f in h["fallback_agents"]))
    for v in h["verdict_fallbacks"]:
        if v.get("error"):
            parts.append(f"layer {v['layer']} {v['stage']} unreachable ({v.get('fallback') or 'fallback'})")
    if not parts:
        return None
    return "faults survived: " + "; ".join(parts)


def format_cost(cost: dict[str, Any]) -> str:
    """A small fixed-width table of the cost summary, for the terminal."""
    rows = [("stage", "calls", "prompt", "completion", "total")]
    for st, s in cost["by_stage"].items():
        rows.append((st, str(s["calls"]), str(s["prompt_tokens"]), str(s["completion_tokens"]), str(s["total_tokens"])))
    t = cost["total"]
    rows.append(("total", str(t["calls"]), str(t["prompt_tokens"]), str(t["completion_tokens"]), str(t["total_tokens"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(5)) for r in rows]
    return "\n".join(lines)
