"""Calls cut off at max_tokens: pure functions over stored traces.

A call whose endpoint reports ``finish_reason == "length"`` stopped because it reached its
``max_tokens``, not because the model was done. When that happens to the call that wrote the
final answer, the answer is usually missing its last line, and a GSM8K-style scorer then
reads an intermediate number: the score measures the token budget as much as the method.
(The first run of issue 16's study B, at max_tokens 256, cut 65% of Qwen's proposals and 64%
of its aggregations; nothing in the report said so.) Per method this module counts:

- per stage, the calls that were cut and the calls that answered;
- the items whose final call (``trace["finish"]["call_id"]``) was cut.

Multi-turn items (MT-Bench: ``trace["turns"]``) count every turn's calls, and an item's final
answer counts as cut when any turn's final call was.
"""

from __future__ import annotations

from typing import Any

# share of final answers cut above which the report warns that its scores measure the budget
WARN_FINAL_SHARE = 0.05


def _turns(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not trace:
        return []
    if "turns" in trace:
        return [t for t in trace.get("turns") or [] if isinstance(t, dict)]
    return [trace]


def item_cutoffs(trace: dict[str, Any] | None) -> dict[str, Any] | None:
    """{"stages": {stage: [answered calls, cut calls]}, "final_cut": bool | None} of one item;
    None without a trace. ``final_cut`` is None when no final call is recorded (a vote)."""
    turns = _turns(trace)
    if not turns:
        return None
    stages: dict[str, list[int]] = {}
    final: bool | None = None
    for t in turns:
        by_id: dict[Any, dict[str, Any]] = {}
        for c in t.get("calls") or []:
            if c.get("error"):
                continue
            by_id[c.get("id")] = c
            cnt = stages.setdefault(str(c.get("stage", "?")), [0, 0])
            cnt[0] += 1
            cnt[1] += int(c.get("finish_reason") == "length")
        fin = t.get("finish") or {}
        last = by_id.get(fin.get("call_id")) if "call_id" in fin else None
        if last is not None:
            final = bool(final) or last.get("finish_reason") == "length"
    return {"stages": stages, "final_cut": final}


def cutoff_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Aggregate `item_cutoffs` over a method's rows (errors left out); None without traces."""
    items = [x for x in (item_cutoffs(r.get("trace")) for r in rows if not r.get("error")) if x is not None]
    if not items:
        return None
    stages: dict[str, list[int]] = {}
    for it in items:
        for st, (n, cut) in it["stages"].items():
            acc = stages.setdefault(st, [0, 0])
            acc[0] += n
            acc[1] += cut
    finals = [it["final_cut"] for it in items if it["final_cut"] is not None]
    calls = sum(n for n, _ in stages.values())
    cut = sum(c for _, c in stages.values())
    return {
        "items": len(items),
        "calls": calls,
        "calls_cut": cut,
        "calls_cut_share": cut / calls if calls else None,
        "by_stage": {st: {"calls": n, "cut": c, "share": c / n if n else None} for st, (n, c) in stages.items()},
        "final_items": len(finals),
        "final_cut": sum(finals),
        "final_cut_share": sum(finals) / len(finals) if finals else None,
    }


def warning(summaries: list[tuple[str, dict[str, Any] | None]]) -> str | None:
    """One line for the report naming the methods with more than WARN_FINAL_SHARE of their
    final answers cut, or None when there are none."""
    bad = [(m, s) for m, s in summaries
           if s and s["final_items"] and (s["final_cut_share"] or 0) > WARN_FINAL_SHARE]
    if not bad:
        return None
    each = ", ".join(f"{m} {s['final_cut']}/{s['final_items']} ({s['final_cut_share']:.0%})" for m, s in bad)
    return (
        f"final answers stopped at max_tokens: {each}. These scores measure the token budget as much "
        "as the methods: raise max_tokens (--max-tokens, or the agents' max_tokens in the config) and run again."
    )
