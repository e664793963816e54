"""The sparse step's cost from stored traces, and a replay of its judge calls (issue 16).

Reads an eval store (`smoa eval ... --out DIR` writes DIR/results.sqlite) and, for every
stored row whose method has a judge:

1. where the judge's tokens go: prompt and completion as the backend counted them, and the
   prompt split into instructions, question and candidates (tokenized with the judge's own
   model); the verdict's length; and what the aggregator is sent (instructions, answers,
   question);
2. with `--replay`, the same judge inputs (the stored candidates of each judge call, the
   order the judge saw them in) sent through another verdict (default `terse`) on the
   pipeline's real judge: its tokens, its kept set and stop decision next to the stored ones.

3. `--reprice`: every stored row's tokens with its synthesize and aggregate prompts rebuilt
   by today's templates (the engine's own `proposer_messages` and `aggregate`), the
   completions as stored: a store written before a template changed (study B's first rows
   predate the markers of issue 14 in those two prompts) is then compared with a run of
   today's code at equal prompts. Only the prompt side is re-priced; it is an estimate.

The replay reuses the engine's own judge step (`Engine.judge`) with the stored method's
shuffle, so the judge sees the candidates in the stored order; a dry run of the stored
verdict through a scripted judge first checks that the rebuilt prompt is byte for byte the
stored one (the row is reported as `rebuilt: no` when the templates changed since).

    PYTHONPATH=src python -m bench.sparse_step --store bench/study/b/results.sqlite \\
        --config bench/study/mixture_b.toml --replay --json /tmp/sparse-replay.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("propose", "judge", "moderate", "aggregate")


@dataclass
class JudgeInput:
    """One stored judge call, with what it needs to be asked again."""

    method: str
    item: str
    layer: int
    seed: int | None  # the pipeline seed the stored run used (eval passes its own)
    question: str
    texts: list[str]  # the layer's answered proposals, by proposer index (None for a failed one)
    ok: list[int]
    asked_stop: bool
    call: dict[str, Any]
    judge_info: dict[str, Any]
    stop_info: dict[str, Any] | None
    row_tokens: dict[str, int]  # the row's tokens by stage
    aggregate: dict[str, Any] | None  # the row's aggregator call


def load_inputs(store: Path) -> list[JudgeInput]:
    from smoa.engine import _question_text

    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    out: list[JudgeInput] = []
    for method, item, trace_json in con.execute(
        "SELECT method, item_id, trace FROM results WHERE error IS NULL AND trace IS NOT NULL ORDER BY method, item_index"
    ):
        t = json.loads(trace_json)
        calls = {c["id"]: c for c in t["calls"]}
        tokens: dict[str, int] = dict.fromkeys(STAGES, 0)
        for c in t["calls"]:
            if c["stage"] in tokens:
                tokens[c["stage"]] += c["prompt_tokens"] + c["completion_tokens"]
        agg = next((c for c in t["calls"] if c["stage"] == "aggregate"), None)
        conv = tuple({"role": m["role"], "content": m["content"]} for m in t["query"])
        for lay in t["layers"]:
            j = lay.get("judge")
            if not j or j.get("call_id") is None:
                continue
            call = calls[j["call_id"]]
            props = lay["proposals"]
            out.append(JudgeInput(
                method=method, item=item, layer=lay["layer"], seed=t["config"].get("seed"), question=_question_text(conv),
                texts=[calls[p["call_id"]]["response"] if p["ok"] else "" for p in props],
                ok=[p["index"] for p in props if p["ok"]],
                asked_stop=bool(call.get("decision") and "stop" in call["decision"]),
                call=call, judge_info=j, stop_info=lay.get("moderator"), row_tokens=tokens, aggregate=agg,
            ))
    return out


def pipeline_for(config: Path, method: str, verdict: str | None, seed: int | None, backends: dict[str, Any] | None = None) -> Any:
    """The config's pipeline for the stored `method` and seed, with another verdict (None: the
    method's own); everything else (agents, shuffle, k) as the stored run had it."""
    from smoa.config import build_pipeline, load_config, select_spec

    cfg = load_config(config)
    name, spec = select_spec(cfg, method if method in cfg.pipelines else None, method)
    spec = spec.model_copy(update={"verdict": verdict or spec.verdict, "seed": seed})
    return build_pipeline(spec, name=name, backends=cfg.backends, instances=backends, cache=False)


async def judge_once(pipe: Any, inp: JudgeInput) -> tuple[dict[str, Any], Any]:
    from smoa.engine import Engine, Proposal
    from smoa.trace import Trace

    eng = Engine(pipe, role_cache=False)
    trace = Trace(method=pipe.method)
    props = [Proposal(index=i, agent=pipe.proposers[i], role=None, call=None, text=inp.texts[i])  # type: ignore[arg-type]
             for i in inp.ok]
    # the loop's rng is fresh per query and the judge is its first user: the same shuffle
    _, info, stop = await eng.judge(trace, inp.question, props, inp.layer, random.Random(pipe.seed), ask_stop=inp.asked_stop)
    call = trace.calls[-1] if trace.calls else None
    return {"info": info, "stop": stop}, call


def rebuilt_matches(config: Path, inp: JudgeInput) -> bool:
    """Replay the stored verdict through a scripted judge: does the engine rebuild the stored prompt?"""
    from smoa.testing import ScriptedBackend

    seen: list[str] = []

    def reply(req: Any) -> str:
        seen.append(req.messages[0]["content"])
        return inp.call["response"]

    be = ScriptedBackend(responder=reply)
    pipe = pipeline_for(config, inp.method, None, inp.seed, backends={"local": be})
    res, _ = asyncio.run(judge_once(pipe, inp))
    return bool(seen) and seen[0] == inp.call["messages"][0]["content"] and res["info"]["kept"] == inp.judge_info["kept"]


def breakdown(count: Any, inp: JudgeInput) -> dict[str, Any]:
    """The judge prompt split by token counts: candidates (with their markers), question, the rest."""
    prompt = inp.call["messages"][0]["content"]
    shown = inp.judge_info.get("shown_order", [])
    cand = sum(count(inp.texts[i]) for i in shown)
    q = count(inp.question)
    whole = count(prompt)
    agg: dict[str, int] = {}
    if inp.aggregate is not None:
        system = inp.aggregate["messages"][0]["content"]
        kept = [inp.texts[i] for i in inp.judge_info.get("kept", [])]
        answers = sum(count(x) for x in kept)
        agg = {"prompt": inp.aggregate["prompt_tokens"], "completion": inp.aggregate["completion_tokens"],
               "answers": answers, "question": count(inp.question),
               "instructions": count(system) - answers}
    return {
        "prompt": inp.call["prompt_tokens"], "completion": inp.call["completion_tokens"],
        "candidates": cand, "question": q, "instructions": whole - cand - q,
        "chat_template": inp.call["prompt_tokens"] - whole,
        "verdict_chars": len(inp.call["response"]),
        "reasoning_chars": len(inp.judge_info.get("reasoning") or ""),
        "aggregate": agg,
    }


def run(store: Path, config: Path, replay: bool, verdict: str = "terse", methods: list[str] | None = None,
        repriced: bool = False) -> dict[str, Any]:
    from smoa.backends.local import get_model, resolve_model_path

    inputs = [i for i in load_inputs(store) if methods is None or i.method in methods]
    if not inputs:
        raise SystemExit(f"{store}: no stored row has a judge call")
    pipe = pipeline_for(config, inputs[0].method, verdict, inputs[0].seed)
    model = get_model(resolve_model_path(pipe.judge.model, None), n_ctx=getattr(pipe.judge.backend, "n_ctx", 4096))
    rows: list[dict[str, Any]] = []
    replies: dict[tuple[Any, ...], tuple[dict[str, Any], Any, float]] = {}
    for inp in inputs:
        row: dict[str, Any] = {"method": inp.method, "item": inp.item, "layer": inp.layer, "asked_stop": inp.asked_stop,
                               "stored": breakdown(model.count_tokens, inp), "rebuilt": rebuilt_matches(config, inp),
                               "stored_kept": inp.judge_info["kept"], "stored_fallback": inp.judge_info.get("fallback"),
                               "stored_stop": (inp.stop_info or {}).get("stop"), "row_tokens": inp.row_tokens}
        if replay:
            p = pipeline_for(config, inp.method, verdict, inp.seed)
            key = (inp.question, tuple(inp.texts[i] for i in inp.ok), p.policy.shuffle, inp.asked_stop, inp.layer)
            if key not in replies:  # methods that share proposals and shuffle share the judge input
                t0 = time.perf_counter()
                res, call = asyncio.run(judge_once(p, inp))
                replies[key] = (res, call, time.perf_counter() - t0)
            res, call, wall = replies[key]
            info, stop = res["info"], res["stop"]
            row["replay"] = {
                "verdict": verdict, "prompt": call.prompt_tokens if call else 0,
                "completion": call.completion_tokens if call else 0, "finish_reason": call.finish_reason if call else None,
                "kept": info["kept"], "same_set": sorted(info["kept"]) == sorted(inp.judge_info["kept"]),
                "shown_order": info.get("shown_order"), "same_order": info.get("shown_order") == inp.judge_info.get("shown_order"),
                "fallback": info.get("fallback"), "notes": info.get("notes"),
                "stop": stop["stop"] if stop else None, "stop_fallback": stop["fallback"] if stop else None,
                "response": call.response if call else "", "wall_s": round(wall, 1),
            }
        rows.append(row)
        print(_line(row), file=sys.stderr, flush=True)
    out = {"store": str(store), "config": str(config), "judge_model": pipe.judge.model, "rows": rows,
           "summary": summarize(rows)}
    if repriced:
        out["reprice"] = reprice(store, config, model.count_tokens)
    return out


def _line(r: dict[str, Any]) -> str:
    s = r["stored"]
    out = f"{r['method']:14s} {r['item']:9s} stored judge {s['prompt']}+{s['completion']} kept {r['stored_kept']}"
    if "replay" in r:
        x = r["replay"]
        out += (f" | {x['verdict']} {x['prompt']}+{x['completion']} kept {x['kept']} stop {x['stop']} fb {x['fallback']}"
                f" reply {x['response'][:60]!r}")
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    st = [r["stored"] for r in rows]
    out: dict[str, Any] = {
        "judge_calls": len(rows), "rebuilt": sum(r["rebuilt"] for r in rows),
        "stored_median": {k: med([s[k] for s in st]) for k in
                          ("prompt", "completion", "candidates", "question", "instructions", "chat_template",
                           "verdict_chars", "reasoning_chars")},
        "aggregate_median": {k: med([s["aggregate"][k] for s in st if s["aggregate"]]) for k in
                             ("prompt", "completion", "answers", "question", "instructions")},
    }
    rep = [r for r in rows if "replay" in r]
    if rep:
        verdicts = [r for r in rep if r["asked_stop"]]
        out["replay"] = {
            "calls": len(rep),
            "prompt_median": med([r["replay"]["prompt"] for r in rep]),
            "completion_median": med([r["replay"]["completion"] for r in rep]),
            "judge_tokens_mean": statistics.fmean(r["replay"]["prompt"] + r["replay"]["completion"] for r in rep),
            "stored_judge_tokens_mean": statistics.fmean(r["stored"]["prompt"] + r["stored"]["completion"] for r in rep),
            "same_set": sum(r["replay"]["same_set"] for r in rep), "same_order": sum(r["replay"]["same_order"] for r in rep),
            "fallbacks": sum(r["replay"]["fallback"] is not None for r in rep),
            "stop_asked": len(verdicts), "stop_true": sum(r["replay"]["stop"] is True for r in verdicts),
            "stop_same": sum(r["replay"]["stop"] == r["stored_stop"] for r in verdicts),
            "cut_at_max_tokens": sum(r["replay"]["finish_reason"] == "length" for r in rep),
        }
    return out


def reprice(store: Path, config: Path, count: Any) -> dict[str, dict[str, float]]:
    """Tokens per item by method: as stored, and with today's synthesize/aggregate prompts."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    per: dict[str, list[tuple[int, int]]] = {}
    for method, trace_json in con.execute(
        "SELECT method, trace FROM results WHERE error IS NULL AND trace IS NOT NULL ORDER BY method, item_index"
    ):
        t = json.loads(trace_json)
        stored = sum(c["prompt_tokens"] + c["completion_tokens"] for c in t["calls"] if c["stage"] != "role")
        per.setdefault(method, []).append((stored, stored + _reprice_delta(config, method, t, count)))
    return {m: {"items": len(v), "stored": statistics.fmean(a for a, _ in v), "repriced": statistics.fmean(b for _, b in v)}
            for m, v in per.items()}


def _reprice_delta(config: Path, method: str, t: dict[str, Any], count: Any) -> int:
    """Prompt tokens that today's synthesize/aggregate templates add to (or take from) one stored row."""
    from smoa.engine import Engine, Proposal
    from smoa.testing import ScriptedBackend
    from smoa.trace import Trace

    calls = {c["id"]: c for c in t["calls"]}
    got: list[list[dict[str, Any]]] = []
    be = ScriptedBackend(responder=lambda req: (got.append(list(req.messages)), "")[1])
    pipe = pipeline_for(config, method, None, t["config"].get("seed"), backends={"local": be})
    eng = Engine(pipe, role_cache=False)
    conv = tuple({"role": m["role"], "content": m["content"]} for m in t["query"])
    roles = [r or None for r in t.get("roles") or []] or [None] * pipe.n

    def props(lay: dict[str, Any], idx: list[int]) -> list[Proposal]:
        by = {p["index"]: p for p in lay["proposals"]}
        return [Proposal(index=i, agent=pipe.proposers[i], role=roles[i], call=None,  # type: ignore[arg-type]
                         text=calls[by[i]["call_id"]]["response"]) for i in idx]

    delta = 0
    for c in t["calls"]:
        if c["stage"] == "propose" and c["layer"] >= 2 and c["messages"][0]["role"] == "system":
            prev = t["layers"][c["layer"] - 2]
            i = next(p["index"] for p in t["layers"][c["layer"] - 1]["proposals"] if p["call_id"] == c["id"])
            last = {x.index: x for x in props(prev, [p["index"] for p in prev["proposals"] if p["ok"]])}
            new = eng.proposer_messages(conv, pipe.policy, c["layer"], i, roles[i], props(prev, prev["kept"]), last)
        elif c["stage"] == "aggregate":
            got.clear()
            asyncio.run(eng.aggregate(Trace(method=method), conv, props(t["layers"][-1], t["finish"]["inputs"]), c["layer"]))
            new = got[0]
        else:
            continue
        delta += count(new[0]["content"]) - count(c["messages"][0]["content"])
    return delta


def report(res: dict[str, Any]) -> str:
    s = res["summary"]
    m, a = s["stored_median"], s["aggregate_median"]
    lines = [
        f"judge: {res['judge_model']}; {s['judge_calls']} stored judge calls ({s['rebuilt']} rebuilt byte for byte)",
        f"stored judge call, median tokens: prompt {m['prompt']:.0f} = candidates {m['candidates']:.0f} + question "
        f"{m['question']:.0f} + instructions {m['instructions']:.0f} + chat template {m['chat_template']:.0f}; "
        f"completion {m['completion']:.0f} (verdict {m['verdict_chars']:.0f} chars, reasoning {m['reasoning_chars']:.0f})",
        f"stored aggregator call, median tokens: prompt {a['prompt']:.0f} (answers {a['answers']:.0f}, question "
        f"{a['question']:.0f}, instructions {a['instructions']:.0f}); completion {a['completion']:.0f}",
    ]
    if "replay" in s:
        r = s["replay"]
        lines.append(
            f"replay ({r['calls']} calls): prompt median {r['prompt_median']:.0f}, completion median {r['completion_median']:.0f}; "
            f"judge tokens per call {r['judge_tokens_mean']:.0f} vs stored {r['stored_judge_tokens_mean']:.0f} "
            f"({r['judge_tokens_mean'] / r['stored_judge_tokens_mean']:.2f}); same kept set {r['same_set']}/{r['calls']} "
            f"(same shown order {r['same_order']}/{r['calls']}); fallbacks {r['fallbacks']}; cut at max_tokens "
            f"{r['cut_at_max_tokens']}; stop true {r['stop_true']}/{r['stop_asked']}, same stop as stored "
            f"{r['stop_same']}/{r['stop_asked']}")
    if "reprice" in res:
        lines.append("tokens per item (calls after role generation), as stored -> with today's synthesize/aggregate prompts:")
        for m, v in res["reprice"].items():
            lines.append(f"  {m:14s} {v['items']} items: {v['stored']:,.0f} -> {v['repriced']:,.0f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("bench/study/b/results.sqlite"))
    ap.add_argument("--config", type=Path, default=Path("bench/study/mixture_b.toml"))
    ap.add_argument("--replay", action="store_true", help="ask the judge again with --verdict (runs the model)")
    ap.add_argument("--verdict", default="terse", help="the verdict to replay with: full or terse")
    ap.add_argument("--reprice", action="store_true", help="also re-price every stored row with today's prompts")
    ap.add_argument("--methods", help="only the stored rows of these methods (comma list)")
    ap.add_argument("--json", type=Path, help="write every row to this file")
    args = ap.parse_args()
    res = run(args.store, args.config, args.replay, args.verdict, args.methods.split(",") if args.methods else None,
              args.reprice)
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
