"""Pulling answers out of model text: final numbers, \\boxed{} answers, JSON objects.

Pure functions, standard library only. The core (votes and agreement in smoa.answers, the
judge's and moderator's verdicts in smoa.verdicts) and the evaluation scorers
(smoa.eval.scoring, which re-exports these) share them, so a vote and a score read an answer
the same way. Our own code: the field's answer checkers (math-verify) compare answers but do
not find them in free text, and the lenient JSON rules are the judges' habits we test here.
"""

from __future__ import annotations

import ast
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["extract_final_number", "extract_json", "json_candidates", "last_boxed", "loads_lenient", "normalize_number"]

# --------------------------------------------------------------------------------------------
# Numbers (GSM8K style)

_NUMBER_RE = re.compile(
    r"(?<![\w.])[-\u2212]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)|(?<![\w.])-?\.\d+"
)


def normalize_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5', '18.0' -> '18', '-3' -> '-3'; None if not a number."""
    s = text.strip().replace("\u2212", "-")
    s = s.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    s = s.removesuffix("%")
    if not s:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    try:
        if d == d.to_integral_value():
            i = d.to_integral_value()
            return "0" if i == 0 else format(i, "f")  # format keeps every digit of long numbers
        return format(d.normalize(), "f")
    except InvalidOperation:  # beyond what Decimal can represent in its context
        return None


def _numbers_in(text: str) -> list[str]:
    return [m.group(0) for m in _NUMBER_RE.finditer(text)]


_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)\s*:?", re.IGNORECASE
)


def extract_final_number(text: str) -> str | None:
    """The model's final numeric answer, normalised, or None.

    Order: the first number after the last ``####``; else after the last "The answer is" /
    "final answer:"; else inside the last ``\\boxed{}``; else the last number in the text.
    """
    if not text:
        return None
    candidates: list[str] = []
    if "####" in text:
        candidates.append(text.rsplit("####", 1)[1])
    matches = list(_ANSWER_IS_RE.finditer(text))
    if matches:
        candidates.append(text[matches[-1].end():])
    boxed = last_boxed(text)
    if boxed is not None:
        candidates.append(boxed)
    for chunk in candidates:
        nums = _numbers_in(chunk.split("\n\n")[0] if chunk.strip() else chunk)
        if nums:
            return normalize_number(nums[0])
    nums = _numbers_in(text)
    return normalize_number(nums[-1]) if nums else None


# --------------------------------------------------------------------------------------------
# \\boxed{} answers (MATH style)


def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == '{'`` and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``), else None."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    j = idx + (len("\\boxed") if text.startswith("\\boxed", idx) else len("\\fbox"))
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{":
        got = _balanced(text, j)
        return got[0] if got else None
    m = re.match(r"[^\s$]+", text[j:])
    return m.group(0) if m else None


# --------------------------------------------------------------------------------------------
# JSON objects in judges' replies

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[^\n]*\n(.*?)```", re.DOTALL)
_SCAN_LIMIT = 200_000  # characters of one text scanned for JSON objects


def json_candidates(text: str) -> list[str]:
    """Where a JSON object may be, in this order: the whole text, each fenced block, then
    every balanced ``{...}`` span (string-aware, outermost only) from left to right."""
    text = text[:_SCAN_LIMIT]
    cands = [text.strip()]
    cands += [b for _, b in _FENCE_RE.findall(text)]
    i = 0
    n = len(text)
    while i < n:
        if text[i] == "{":
            depth, j, in_str, esc = 0, i, False, False
            while j < n:
                c = text[j]
                if in_str:
                    if esc:
                        esc = False
                    elif c == "\\":
                        esc = True
                    elif c == '"':
                        in_str = False
                elif c == '"':
                    in_str = True
                elif c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        cands.append(text[i: j + 1])
                        break
                j += 1
            i = j + 1 if depth == 0 and j < n else i + 1
        else:
            i += 1
    return cands


def loads_lenient(s: str) -> Any:
    """JSON as judges write it: strict JSON, else with trailing commas dropped, else a
    Python-style literal (single quotes, True/False/None); None when none of them parses."""
    s = s.strip()
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    try:
        return json.loads(fixed)
    except (ValueError, RecursionError):
        pass
    if len(fixed) < 20000:
        pyish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", fixed))
        pyish = re.sub(r"\bnull\b", "None", pyish)
        try:
            return ast.literal_eval(pyish)  # single-quoted dicts
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def extract_json(text: str, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The one JSON object a model meant as its answer, by one rule for the whole project:

    **the last object found** (candidates in `json_candidates` order, each read by
    `loads_lenient`) **that has one of `keys`** as a key (letter case aside), or the last
    object of all when no keys are given; None when there is none.

    Last, because models echo an example or a quoted object before writing their own; with
    keys, because an object without the wanted field is not a verdict. (The smoa judge's
    reply has objects copied from candidates blanked before this: smoa.guard.strip_echoes.)
    """
    if not text:
        return None
    found: list[dict[str, Any]] = []
    for cand in json_candidates(text):
        obj = loads_lenient(cand)
        if isinstance(obj, dict):
            found.append(obj)
    if keys:
        lk = {k.lower() for k in keys}
        found = [d for d in found if any(str(k).lower() in lk for k in d)]
    return found[-1] if found else None
