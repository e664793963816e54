"""How well the judge and the moderator chose: pure functions over stored traces.

For sets with checkable answers (GSM8K, MATH-500, MMAU-math: `Benchmark.checks_proposals`),
the eval scores every proposal of every layer, not only the final answer, and keeps the
verdicts in the row (`score_detail["proposals"]`: call id -> 1/0). From those and the trace's
layer records this module computes, per method:

- judge recall: over the judge's decisions where at least one candidate was correct, how
  often the kept k held a correct one; next to it the random-k baseline, the mean over the
  same decisions of 1 - C(n-c, k) / C(n, k) (n distinct candidates, c of them correct);
- oracle accuracy: the share of items where any proposal of any layer was correct;
- the histogram of kept positions, in the order the judge was shown (1 = shown first);
- the keep rate by model and by proposer (kept / shown): whether the judge drops a weak
  model's answers, which is what sparse mixing over a mixed panel relies on;
- the share of correct proposals by model, per layer (layer 1 is each model on its own):
  which proposers carry the panel, for every method, dense ones included;
- the moderator: how often it stopped with a correct answer kept and with none, how often
  it went on with one kept and with none, and the rounds used.

A decision the judge did not make (no more distinct answers than k: all kept) is counted
apart and left out of recall, since it chose nothing.
"""

from __future__ import annotations

from math import comb
from typing import Any

PROPOSER, MODEL = 0, 1  # the two parts of a layer's (proposer, model) key


def random_keep_rate(n: int, correct: int, k: int) -> float:
    """P(a uniformly random k-subset of n candidates holds at least one of `correct`)."""
    if correct <= 0 or n <= 0:
        return 0.0
    k = min(k, n)
    return 1.0 - comb(n - correct, k) / comb(n, k)


def proposal_texts(trace: dict[str, Any] | None) -> dict[str, str]:
    """str(call id) -> response text of every answered propose call of a single-turn trace."""
    if not trace or "turns" in trace:
        return {}
    return {str(c["id"]): c.get("response") or "" for c in trace.get("calls", [])
            if c.get("stage") == "propose" and c.get("id") is not None and not c.get("error")}


def item_selection(trace: dict[str, Any] | None, correct: dict[str, Any]) -> dict[str, Any] | None:
    """Per-layer judge and moderator facts of one item, or None without proposal verdicts."""
    if not trace or "turns" in trace or not correct:
        return None
    layers = []
    any_correct = False
    for lay in trace.get("layers", []):
        by_index = {p["index"]: p.get("call_id") for p in lay.get("proposals", [])}
        # index -> (proposer, model), the two keys the keep and correct rates are counted by
        who = {p["index"]: (str(p.get("agent") or f"proposer-{p['index'] + 1}"), str(p.get("model") or "?"))
               for p in lay.get("proposals", [])}

        def ok(i: int, by_index: dict[int, Any] = by_index) -> bool:
            return bool(correct.get(str(by_index.get(i)), 0))

        props = [i for i in by_index if str(by_index[i]) in correct]
        layer_correct = [i for i in props if ok(i)]
        any_correct = any_correct or bool(layer_correct)
        kept = list(lay.get("kept", []))
        rec: dict[str, Any] = {"layer": lay.get("layer"), "proposals": len(props), "correct": len(layer_correct),
                               "kept_correct": any(ok(i) for i in kept),
                               "scored_by": [(who[i][MODEL], ok(i)) for i in props if i in who]}
        j = lay.get("judge")
        if isinstance(j, dict):
            cands = list(j.get("candidates") or [])
            rec["judge_called"] = "shown_order" in j
            if rec["judge_called"]:
                shown = list(j["shown_order"])
                c = sum(1 for i in cands if ok(i))
                rec.update(n=len(cands), k=len(kept), cand_correct=c,
                           random=random_keep_rate(len(cands), c, len(kept)),
                           positions=[shown.index(i) + 1 for i in kept if i in shown],
                           shown_by=[who[i] for i in cands if i in who],
                           kept_by=[who[i] for i in kept if i in who and i in cands])
        m = lay.get("moderator")
        if isinstance(m, dict) and "stop" in m:
            rec["stop"] = bool(m["stop"])
        layers.append(rec)
    return {"layers": layers, "oracle": any_correct, "rounds": len(layers), "stop_reason": trace.get("stop_reason")}


def selection_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Aggregate `item_selection` over a method's rows (each row with its `trace` and
    `score_detail`); None when no row has proposal verdicts."""
    items = []
    for r in rows:
        if r.get("error"):
            continue
        sel = item_selection(r.get("trace"), (r.get("score_detail") or {}).get("proposals") or {})
        if sel is not None:
            items.append(sel)
    if not items:
        return None
    decisions = [lay for it in items for lay in it["layers"] if lay.get("judge_called")]
    chances = [d for d in decisions if d["cand_correct"] > 0]
    hist: dict[int, int] = {}
    for d in decisions:
        for p in d["positions"]:
            hist[p] = hist.get(p, 0) + 1
    stops = [lay for it in items for lay in it["layers"] if "stop" in lay]

    def keep_rates(part: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for d in decisions:
            for key, field in (("shown", "shown_by"), ("kept", "kept_by")):
                for w in d.get(field, []):
                    out.setdefault(w[part], {"shown": 0, "kept": 0})[key] += 1
        return dict(sorted(out.items()))
    right: dict[str, dict[int, dict[str, int]]] = {}  # model -> layer -> counts
    for it in items:
        for lay in it["layers"]:
            for model, good in lay.get("scored_by", []):
                c = right.setdefault(model, {}).setdefault(int(lay.get("layer") or 0), {"proposals": 0, "correct": 0})
                c["proposals"] += 1
                c["correct"] += int(good)
    return {
        "items": len(items),
        "correct_by_model": {m: {str(layer): c for layer, c in sorted(v.items())} for m, v in sorted(right.items())},
        "oracle_accuracy": sum(it["oracle"] for it in items) / len(items),
        "judge_decisions": len(decisions),
        "judge_not_called": sum(1 for it in items for lay in it["layers"] if lay.get("judge_called") is False),
        "judge_chances": len(chances),
        "judge_recall": (sum(d["kept_correct"] for d in chances) / len(chances)) if chances else None,
        "random_recall": (sum(d["random"] for d in chances) / len(chances)) if chances else None,
        "kept_positions": dict(sorted(hist.items())),
        "kept_by_model": keep_rates(MODEL),
        "kept_by_proposer": keep_rates(PROPOSER),
        "moderator_decisions": len(stops),
        "stopped_correct": sum(1 for s in stops if s["stop"] and s["kept_correct"]),
        "stopped_wrong": sum(1 for s in stops if s["stop"] and not s["kept_correct"]),
        "continued_correct": sum(1 for s in stops if not s["stop"] and s["kept_correct"]),
        "continued_wrong": sum(1 for s in stops if not s["stop"] and not s["kept_correct"]),
        "rounds_mean": sum(it["rounds"] for it in items) / len(items),
        "stop_reasons": _count(it["stop_reason"] for it in items),
    }


def _count(xs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[str(x)] = out.get(str(x), 0) + 1
    return dict(sorted(out.items()))
