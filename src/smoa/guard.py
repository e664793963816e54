"""Candidate answers are data, never instructions: the judge and moderator defences.

Three layers, each tested in tests/reliability/test_hijack.py against a scripted judge
that is fooled whenever one of them is missing:

1. Markers. The judge sees each candidate between markers that carry a nonce computed
   from the candidates themselves (engine._nonce), so no candidate can contain it.
2. `defang`: a candidate's text cannot fake a marker. Unicode look-alikes are folded
   (NFKC), invisible format characters removed, runs of `<` or `>` broken, and the nonce
   (in any letter case) replaced, so text inside a candidate can never close its block.
3. `strip_echoes`: only the judge's own output is parsed. A JSON object in the judge's
   reply that is a copy of one found in a candidate (a fake verdict the judge quoted, or
   repeated because it was told to) is blanked before parsing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

_RUN = re.compile(r"<{2,}|>{2,}")
_SCAN_LIMIT = 200_000  # characters of one text scanned for JSON objects


def defang(text: str, nonce: str) -> str:
    """`text` as the judge may safely see it between markers carrying `nonce`."""
    t = unicodedata.normalize("NFKC", text)
    t = "".join(ch for ch in t if unicodedata.category(ch) != "Cf")
    t = _RUN.sub(lambda m: " ".join(m.group()), t)
    if nonce:
        t = re.sub(re.escape(nonce), "[code]", t, flags=re.IGNORECASE)
    return t


def json_objects(text: str) -> list[tuple[int, int, Any]]:
    """Every top-level JSON object in `text`: (start, end, value), left to right."""
    out: list[tuple[int, int, Any]] = []
    dec = json.JSONDecoder()
    pos = 0
    text = text[:_SCAN_LIMIT]
    while True:
        i = text.find("{", pos)
        if i < 0:
            return out
        try:
            v, end = dec.raw_decode(text, i)
        except (json.JSONDecodeError, ValueError, RecursionError):
            pos = i + 1
            continue
        if isinstance(v, dict):
            out.append((i, end, v))
            pos = end
        else:
            pos = i + 1


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _squash(s: str) -> str:
    return " ".join(s.split())


def strip_echoes(reply: str, candidates: list[str]) -> tuple[str, int]:
    """The judge's `reply` with every JSON object copied from a candidate blanked out.

    An object counts as copied when it equals (as JSON) an object found in a candidate, or
    when its text, whitespace aside, appears in a candidate. Returns the cleaned reply and
    how many objects were removed.
    """
    if "{" not in reply:
        return reply, 0
    seen: set[str] = set()
    squashed: list[str] = []
    for c in candidates:
        if "{" not in c:
            continue
        squashed.append(_squash(c))
        for _, _, v in json_objects(c):
            seen.add(_canon(v))
    if not squashed:
        return reply, 0
    removed = 0
    out = reply
    for start, end, v in reversed(json_objects(reply)):
        span = reply[start:end]
        if _canon(v) in seen or any(_squash(span) in s for s in squashed):
            out = out[:start] + " " * (end - start) + out[end:]
            removed += 1
    return out, removed
