"""One (item, method): answer it with the engine (turn by turn for multi-turn items),
account its cost from the traces, score it (rule-based, or an evaluation judge called apart
from the method), and return the row for the results store. Never raises for a failed
model call: the row carries the error and whatever trace there was."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from dataclasses import replace
from typing import Any

from .. import otel
from ..config import Pipeline
from ..engine import Engine
from ..trace import Trace, cost_of
from ..types import ConfigError, SmoaError
from .selection import proposal_texts
from .store import Row

# the error prefix of a row whose answer is fine but whose scorer crashed: such rows are
# scored again on the next run, from the stored answer, without new model calls
SCORING_FAILED = "scoring failed:"


def method_cost(calls: list[Any]) -> dict[str, Any]:
    """The trace's cost, with calls answered from the response cache counted at what they
    cost when first made (their `cached` count is kept per stage): a method's cost must not
    depend on what an earlier run happened to leave in the cache."""
    full = cost_of([replace(c, cached=False) if c.cached else c for c in calls])
    seen = cost_of(calls)
    for st, v in full["by_stage"].items():
        v["cached"] = seen["by_stage"][st]["cached"]
    full["total"]["cached"] = seen["total"]["cached"]
    return full


def _jsonable_detail(detail: Any) -> dict[str, Any]:
    if not isinstance(detail, dict):
        return {"detail": str(detail)}
    return detail


def _turns(item: Any) -> list[str]:
    """The user turns of an item: MT-Bench items carry two in meta["turns"]; others one."""
    turns = (item.meta or {}).get("turns") if hasattr(item, "meta") else None
    if isinstance(turns, list) and len(turns) > 1 and all(isinstance(t, str) for t in turns):
        return list(turns)
    return [item.prompt]


async def run_one(
    bench: Any, item: Any, index: int, method: str, pipe: Pipeline, judge: Pipeline | None, run_id: str = "",
) -> Row:
    """Answer one item with one method, score it, and return its row (never raises for a
    failed model call: the row carries the error). A multi-turn item is answered turn by
    turn, each turn seeing the conversation so far; its cost is the sum over turns."""
    t0 = time.perf_counter()
    row = Row(benchmark=bench.name, method=method, item_id=item.id, item_index=index, run_id=run_id, worker=_worker())
    traces: list[Trace] = []
    answers: list[str] = []
    conv: list[dict[str, str]] = []
    try:
        for q in _turns(item):
            conv.append({"role": "user", "content": q})
            try:
                result = await Engine(pipe).run(list(conv) if len(conv) > 1 else q)
            except SmoaError as e:
                tr = e.trace
                if tr is not None:
                    traces.append(tr)
                raise
            traces.append(result.trace)
            answers.append(result.answer)
            conv.append({"role": "assistant", "content": result.answer})
        row.answer = answers[-1]
    except SmoaError as e:
        row.error = str(e)
    except Exception as e:  # a bug must not take the whole run down
        row.error = f"{type(e).__name__}: {e}"
    if traces:
        calls = [c for t in traces for c in t.calls]
        cost = method_cost(calls)
        row.tokens_by_stage = cost["by_stage"]
        tot = cost["total"]
        row.prompt_tokens, row.completion_tokens = tot["prompt_tokens"], tot["completion_tokens"]
        row.total_tokens, row.calls, row.call_errors = tot["total_tokens"], tot["calls"], tot["errors"]
        row.cached_calls = tot["cached"]
        row.latency_s = round(sum(c.latency_s for c in calls), 6)
        row.trace = traces[0].to_dict() if len(traces) == 1 else {"turns": [t.to_dict() for t in traces]}
    if row.error is None:
        try:
            await score_row(bench, item, row, answers, judge)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            row.error = f"{SCORING_FAILED} {type(e).__name__}: {e}"
    row.wall_s = round(time.perf_counter() - t0, 6)
    _export(traces, row)
    return row


def _export(traces: list[Trace], row: Row) -> None:
    """Each turn's trace as OpenTelemetry spans (when export is on), with the row's score."""
    for turn, tr in enumerate(traces, 1):
        attrs = {"smoa.eval.benchmark": row.benchmark, "smoa.eval.method": row.method,
                 "smoa.eval.item_id": row.item_id, "smoa.eval.run_id": row.run_id,
                 "smoa.eval.score": row.score, "smoa.eval.correct": row.correct}
        if len(traces) > 1:
            attrs["smoa.eval.turn"] = turn
        otel.record(tr, attrs)


def _is_pairwise(bench: Any) -> bool:
    schema = getattr(bench, "verdict_schema", None) or {}
    return getattr(bench, "mode", None) == "pairwise" or "winner" in schema.get("properties", {})


def judge_plan(bench: Any, item: Any, answers: list[str]) -> list[dict[str, Any]]:
    """The judge calls one answer needs: one per turn (multi-turn sets), and for pairwise
    sets both orders (the method's answer shown first, then the reference first), so a
    judge's position bias cancels out."""
    turns = [{"turn": t} for t in range(1, len(answers) + 1)] if len(answers) > 1 else [{}]
    swaps = [{"swap": False}, {"swap": True}] if _is_pairwise(bench) else [{}]
    return [t | w for t in turns for w in swaps]


async def score_row(bench: Any, item: Any, row: Row, answers: list[str], judge: Pipeline | None) -> None:
    """Fill the row's score fields from its answers (raises if the scorer fails)."""
    if not getattr(bench, "needs_judge", False):
        score = await bench.ascore(item, row.answer or "")
        v = float(score.value)
        row.score = None if math.isnan(v) else v
        row.correct = score.correct
        row.score_detail = _jsonable_detail(score.detail)
        if getattr(bench, "checks_proposals", False):
            # every proposal of every layer, for the judge's and moderator's figures (selection.py)
            texts = proposal_texts(row.trace)
            if texts:
                row.score_detail["proposals"] = {
                    cid: int(bool((await bench.ascore(item, text)).correct)) for cid, text in texts.items()
                }
        return
    if judge is None:
        raise ConfigError(f"{bench.name} needs an LLM judge but none is configured")
    answer_arg: Any = answers if len(answers) > 1 else (answers[0] if answers else "")
    eng = Engine(judge)  # the evaluation judge's own one-call pipeline (work.build_judge)
    jt = Trace(method="eval-judge")
    verdicts: list[str] = []
    scores = []
    for kw in judge_plan(bench, item, answers):
        msgs = bench.judge_messages(item, answer_arg, **kw)
        schema_for = getattr(bench, "schema_for", None)
        schema = (schema_for(item) if callable(schema_for) else getattr(bench, "verdict_schema", None)) or None
        rec = await eng.call(jt, judge.proposers[0], list(msgs), "eval_judge", 0, json_schema=schema)
        verdicts.append(rec.response)
        scores.append((kw, bench.score(item, answer_arg, verdict=rec.response, **kw)))
    row.judge_tokens = sum(c.prompt_tokens + c.completion_tokens for c in jt.calls)
    if len(scores) == 1:
        score = scores[0][1]
        row.judge_verdict = verdicts[0]
        v = float(score.value)
        row.score = None if math.isnan(v) else v
        row.correct = score.correct
        row.score_detail = _jsonable_detail(score.detail)
        return
    # several judgements (turns, orders): the benchmark combines them (upstream's rules)
    row.judge_verdict = json.dumps(verdicts, ensure_ascii=False)
    combined = bench.combine(item, scores)
    v = float(combined.value)
    row.score = None if math.isnan(v) else v
    row.correct = combined.correct
    row.score_detail = _jsonable_detail(combined.detail)
    if len(answers) > 1:
        row.score_detail["answers"] = answers


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


