"""Judge and moderator verdicts: schemas, a tolerant parser, and defined fallbacks.

Pure functions over text and data; no I/O. Only the judge's own output is parsed here.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from .extract import extract_json


def judge_schema(n: int, k: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 600},
            "selected": {
                "type": "array",
                "items": {"type": "integer", "enum": list(range(1, n + 1))},
                "minItems": k,
                "maxItems": k,
            },
        },
        "required": ["reasoning", "selected"],
        "additionalProperties": False,
    }


def verdict_schema(n: int, k: int) -> dict[str, Any]:
    """The judge and moderator in one call (as in the SMoA reference): selection, reasoning, stop."""
    schema = judge_schema(n, k)
    props = dict(schema["properties"])
    props["stop"] = {"type": "boolean"}
    return {**schema, "properties": props, "required": ["reasoning", "selected", "stop"]}


# The terse verdict (policy verdict = "terse"): labels first, then stop, then one short sentence,
# so a grammar-bound judge commits to its choice before it writes, and a schema that forbids
# long text. TERSE_MAX_TOKENS bounds the call: the longest reply the schema allows is about
# 45 tokens of a BPE vocabulary, so the cap cuts only a judge that ignores the schema (its cut
# reply is then unusable and counted as a fallback, as any bad verdict is).
TERSE_REASON_CHARS = 100
TERSE_MAX_TOKENS = 64


def _terse_reason() -> dict[str, Any]:
    return {"type": "string", "maxLength": TERSE_REASON_CHARS}


def terse_judge_schema(n: int, k: int, stop: bool) -> dict[str, Any]:
    """The terse judge's reply: {"selected": [...], "stop": bool (when asked), "reasoning": short}."""
    props: dict[str, Any] = {"selected": judge_schema(n, k)["properties"]["selected"]}
    if stop:
        props["stop"] = {"type": "boolean"}
    props["reasoning"] = _terse_reason()
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


TERSE_MODERATOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"stop": {"type": "boolean"}, "reasoning": _terse_reason()},
    "required": ["stop", "reasoning"],
    "additionalProperties": False,
}

MODERATOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 400},
        "stop": {"type": "boolean"},
    },
    "required": ["reasoning", "stop"],
    "additionalProperties": False,
}

ROLES_SCHEMA_ITEM = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 80}, "description": {"type": "string", "maxLength": 400}},
    "required": ["name", "description"],
}


def roles_schema(n: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"roles": {"type": "array", "items": ROLES_SCHEMA_ITEM, "minItems": n, "maxItems": n}},
        "required": ["roles"],
    }


_SELECT_KEYS = ("selected", "chosen responses", "chosen_responses", "chosen", "choices", "best", "selection")
_STOP_KEYS = ("stop", "end debate", "end_debate", "finish", "done")


@dataclass
class JudgeVerdict:
    selected: list[int]  # indices into the candidate list given to `resolve_selection` (0-based)
    reasoning: str = ""
    fallback: str | None = None  # None when the verdict was used as given
    notes: list[str] = field(default_factory=list)


def parse_labels(text: str) -> tuple[list[Any] | None, str]:
    """The labels the judge chose, and its reasoning; (None, "") when nothing is usable."""
    obj = extract_json(text, _SELECT_KEYS) or extract_json(text)
    if obj is None:
        return None, ""
    reasoning = str(obj.get("reasoning", ""))[:2000]
    for key in _SELECT_KEYS:
        if key in obj:
            raw = obj[key]
            if isinstance(raw, int | str):
                raw = [raw]
            if isinstance(raw, list):
                return raw, reasoning
    return None, reasoning


def _label_to_int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str):
        m = re.fullmatch(r"\s*(?:candidate|response|answer)?\s*#?\s*(\d+)\s*", x, re.IGNORECASE)
        if m:
            return int(m.group(1))
    return None


def resolve_selection(text: str, order: list[int], k: int, rng: random.Random) -> JudgeVerdict:
    """Map the judge's labels (1..n, in the shuffled order it saw) back to candidate indices.

    `order[j]` is the candidate index shown to the judge as label j+1. Out-of-range and
    repeated labels are dropped; if fewer than k remain, the rest are drawn at random
    from the unchosen candidates and the verdict is marked with a fallback reason.
    """
    n = len(order)
    labels, reasoning = parse_labels(text)
    chosen: list[int] = []
    notes: list[str] = []
    if labels is None:
        notes.append("no usable JSON verdict")
    else:
        for lab in labels:
            v = _label_to_int(lab)
            if v is None or not 1 <= v <= n:
                notes.append(f"ignored label {lab!r}")
                continue
            idx = order[v - 1]
            if idx in chosen:
                notes.append(f"ignored repeated label {v}")
                continue
            chosen.append(idx)
    fallback = None
    if len(chosen) > k:
        notes.append(f"kept the first {k} of {len(chosen)} labels")
        chosen = chosen[:k]
        fallback = "truncated"
    if len(chosen) < k:
        rest = [i for i in sorted(order) if i not in chosen]
        fill = rng.sample(rest, k - len(chosen))
        fallback = "random" if not chosen else "random_fill"
        notes.append(f"filled {len(fill)} of {k} at random")
        chosen.extend(fill)
    return JudgeVerdict(selected=chosen, reasoning=reasoning, fallback=fallback, notes=notes)


@dataclass
class ModeratorVerdict:
    stop: bool
    reasoning: str = ""
    fallback: str | None = None


def parse_moderator(text: str) -> ModeratorVerdict:
    """Whether to stop. An unusable verdict means: go on (the hard round limit still holds)."""
    obj = extract_json(text, _STOP_KEYS) or extract_json(text)  # an object without the field: a fallback
    if obj is not None:
        reasoning = str(obj.get("reasoning", ""))[:2000]
        for key in _STOP_KEYS:
            if key in obj:
                v = obj[key]
                if isinstance(v, bool):
                    return ModeratorVerdict(stop=v, reasoning=reasoning)
                if isinstance(v, str) and v.strip().lower() in ("true", "yes", "false", "no"):
                    return ModeratorVerdict(stop=v.strip().lower() in ("true", "yes"), reasoning=reasoning)
        return ModeratorVerdict(stop=False, reasoning=reasoning, fallback="no stop field: continue")
    return ModeratorVerdict(stop=False, fallback="no usable JSON verdict: continue")


# Small models sometimes copy the reply shape from the prompt instead of filling it in.
_ROLE_PLACEHOLDERS = ("one or two sentences written to the assistant", "short title")


def _is_placeholder(desc: str) -> bool:
    d = " ".join(desc.lower().split())
    return any(p in d for p in _ROLE_PLACEHOLDERS) or len(d) < 4


def parse_roles(text: str, n: int) -> list[str]:
    """Role descriptions from the role generator's reply; may return fewer than n."""
    obj = extract_json(text, ("roles",))
    roles: list[str] = []
    if obj is not None and isinstance(obj.get("roles"), list):
        for r in obj["roles"]:
            if isinstance(r, dict):
                desc = str(r.get("description", "")).strip()
                if desc and not _is_placeholder(desc):
                    roles.append(desc)
            elif isinstance(r, str) and r.strip() and not _is_placeholder(r):
                roles.append(r.strip())
    out: list[str] = []
    seen: set[str] = set()
    for r in roles:
        key = " ".join(r.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out[:n]
