"""Extract a short final answer from free text, for majority votes (pure functions)."""

from __future__ import annotations

import re
from collections import Counter

_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"


def _norm_number(s: str) -> str | None:
    s = s.replace("$", "").replace(",", "").strip().rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    if v.is_integer():
        return str(int(v))
    return repr(round(v, 6))


def _boxed(text: str) -> str | None:
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, j = 0, i + len("\\boxed{") - 1
    for j2 in range(j, len(text)):
        if text[j2] == "{":
            depth += 1
        elif text[j2] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : j2].strip()
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: after '####', 'answer is', in \\boxed{}, else the last number."""
    m = re.search(r"####\s*(.+)", text)
    if m:
        cand = m.group(1).strip().splitlines()[0]
        n = re.search(_NUM, cand)
        return _norm_number(n.group(0)) if n else cand.strip().lower() or None
    b = _boxed(text)
    if b is not None:
        n = _norm_number(b)
        return n if n is not None else " ".join(b.split())
    m = re.findall(r"answer\s*(?:is|:)\s*:?\s*(" + _NUM + ")", text, re.IGNORECASE)
    if m:
        return _norm_number(m[-1])
    nums = re.findall(_NUM, text)
    if nums:
        return _norm_number(nums[-1])
    return None


def majority(answers: list[str | None]) -> tuple[str | None, dict[str, int]]:
    """The plurality answer if there is a unique one with at least two votes and at least
    half of the answers were extractable; else None (the caller falls back to an aggregator)."""
    got = [a for a in answers if a is not None]
    counts = Counter(got)
    if not got or len(got) * 2 < len(answers):
        return None, dict(counts)
    (top, c1), *rest = counts.most_common()
    if c1 < 2 or (rest and rest[0][1] == c1):
        return None, dict(counts)
    return top, dict(counts)
