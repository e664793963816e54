"""Candidate answers are data, never instructions: one defence for every prompt that carries them.

Every prompt that shows candidate text to a model (judge, moderator, the combined verdict,
aggregate, synthesize, debate) goes through the same three layers, each tested in
tests/reliability/test_hijack.py against scripted models that are fooled whenever one of
them is missing:

1. Markers. Each candidate sits between markers that carry a nonce computed from the
   candidates themselves (engine._nonce), so no candidate can contain it.
2. `defang`: a candidate's text cannot fake a marker. The text is folded the way a reader
   sees it (`fold`: Unicode NFKC, then invisible characters dropped: format characters,
   Unicode's default-ignorable code points, blank fillers such as U+2800 and U+3164);
   then every run of two or more marker look-alikes (`MARKER_CHARS`, with combining marks
   between them ignored) is broken with spaces, and anything that reads as the nonce
   (`nonce_pattern`: letter case and Unicode confusables folded) is replaced. So text
   inside a candidate can never close its block.
3. `strip_echoes`: only the judge's or moderator's own output is parsed. A JSON object in
   its reply that repeats one found in a candidate (a fake verdict it quoted, or copied
   because it was told to) is blanked before parsing. Objects are compared by value after
   normalisation (`canon_value`: NFKC, numbers as numbers, "3" and 3.0 as 3, "true" as
   true, labels such as "candidate 3" as 3), and a reply object whose fields are a subset
   of a candidate object's counts as a copy (a verdict with one field dropped).

The look-alike rule is Unicode's own data, not a list we made up: the confusables of `<`
and `>` (UTS #39 confusables.txt, through the `confusable-homoglyphs` package), closed
transitively, plus every character whose Unicode name calls it an angle bracket, an angle
quotation mark or a less/greater-than sign (`MARKER_CHARS`; a test recomputes that set
from `unicodedata` so that it cannot fall behind). A single look-alike is left alone
(French quotes stay quotes); only runs, which is what a marker needs, are broken.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from functools import lru_cache
from typing import Any

_SCAN_LIMIT = 200_000  # characters of one text scanned for JSON objects

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): invisible when
# rendered, so a reader never sees them between two marker characters.
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
# blanks that render as empty space yet are letters or symbols, not spaces
_BLANKS = frozenset({0x2800, 0x3164, 0x115F, 0x1160, 0xFFA0})

# The characters that can be read as `<` or `>` (see the module docstring for the rule).
# Printed by `marker_chars_from_unicode()`; tests/reliability/test_guard.py checks they agree.
MARKER_CHARS = frozenset(
    "<>\u00ab\u00bb\u02c2\u02c3\u1433\u1438\u16b2\u2039\u203a\u2329\u232a\u276c\u276d\u276e\u276f"
    "\u2770\u2771\u27e8\u27e9\u27ea\u27eb\u2991\u2992\u29fc\u29fd\u2e16\u3008\u3009\u300a\u300b"
    "\ufe3d\ufe3e\ufe3f\ufe40\ufe64\ufe65\uff1c\uff1e\U0001d236\U0001d237\U00016f3f"
)
_MARKER_NAMES = ("ANGLE BRACKET", "POINTING ANGLE", "ANGLE QUOTATION", "LESS-THAN SIGN", "GREATER-THAN SIGN")


@lru_cache(maxsize=8192)
def _invisible(ch: str) -> bool:
    o = ord(ch)
    if o in _BLANKS or unicodedata.category(ch) == "Cf":
        return True
    return any(lo <= o <= hi for lo, hi in _IGNORABLE)


def fold(text: str) -> str:
    """`text` as a reader sees it: NFKC, with invisible and blank-filler characters removed.

    ASCII text is returned as it is: it is its own NFKC form and holds no invisible
    character (tests/reliability/test_guard.py checks all 128), and most model text is
    ASCII. Otherwise each distinct character is looked at once."""
    if text.isascii():
        return text
    t = unicodedata.normalize("NFKC", text)
    gone = [ch for ch in set(t) if ord(ch) > 127 and _invisible(ch)]
    return t.translate(dict.fromkeys(map(ord, gone))) if gone else t


def _confusables() -> dict[str, list[str]]:
    from importlib import resources

    import confusable_homoglyphs  # noqa: F401 - the data file ships with the package

    raw = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for ch, glyphs in raw.items():
        for g in glyphs:
            c = "".join(x for x in g.get("c", "") if not _invisible(x))
            if len(c) == 1:
                out.setdefault(ch, []).append(c)
                out.setdefault(c, []).append(ch)
    return out


@lru_cache(maxsize=1)
def _confusable_table() -> dict[str, list[str]]:
    return _confusables()


def look_alikes(chars: str) -> set[str]:
    """Every character Unicode lists as confusable with one of `chars` (either case), closed."""
    table = _confusable_table()
    seen = {c for ch in chars for c in (ch, ch.lower(), ch.upper())}
    todo = list(seen)
    while todo:
        for x in table.get(todo.pop(), ()):
            if x not in seen:
                seen.add(x)
                todo.append(x)
    return seen


def marker_chars_from_unicode() -> frozenset[str]:
    """`MARKER_CHARS` computed from Unicode data (slow: walks every code point)."""
    out = look_alikes("<>")
    for cp in range(0x110000):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if any(k in name for k in _MARKER_NAMES) and not _invisible(ch):
            out.add(ch)
    return frozenset(out)


@lru_cache(maxsize=1)
def _marker_pair() -> re.Pattern[str]:
    """Two marker look-alikes with only non-ASCII characters between them: what every run
    of `_break_runs` contains (combining marks are never ASCII), and ordinary text rarely."""
    cls = "[" + "".join(re.escape(c) for c in sorted(MARKER_CHARS)) + "]"
    return re.compile(cls + r"[^\x00-\x7f]*" + cls)


def _break_runs(t: str) -> str:
    """Every run of two or more marker look-alikes (combining marks between them ignored)
    becomes its marker characters separated by spaces."""
    if t.isascii():  # ASCII has two marker characters and no combining marks
        if not ("<<" in t or ">>" in t or "<>" in t or "><" in t):
            return t
    elif not _marker_pair().search(t):
        return t  # no run possible: skip the character walk
    return _break_runs_walk(t)


def _break_runs_walk(t: str) -> str:
    """`_break_runs` character by character (the rule itself)."""
    out: list[str] = []
    i, n = 0, len(t)
    while i < n:
        if t[i] not in MARKER_CHARS:
            out.append(t[i])
            i += 1
            continue
        run = [t[i]]
        j = i + 1
        while j < n:
            k = j
            while k < n and unicodedata.category(t[k]) in ("Mn", "Me"):
                k += 1
            if k < n and t[k] in MARKER_CHARS:
                run.append(t[k])
                j = k + 1
            else:
                break
        if len(run) == 1:
            out.append(t[i:j])
        else:
            out.append(" ".join(run))
        i = j
    return "".join(out)


@lru_cache(maxsize=256)
def _char_class(ch: str) -> str:
    """A character class of `ch` and its look-alikes (the pattern text, for re.IGNORECASE)."""
    return "[" + "".join(re.escape(a) for a in sorted(look_alikes(ch))) + "]"


@lru_cache(maxsize=256)
def nonce_pattern(nonce: str) -> re.Pattern[str]:
    """A pattern for `nonce` written in any letter case or with Unicode look-alikes of its
    characters, with combining marks between them."""
    return re.compile(r"[\u0300-\u036f]*".join(_char_class(ch) for ch in nonce), re.IGNORECASE)


# The engine's nonces are lower-case hex digits (engine._nonce), new for every prompt, and
# compiling a nonce's pattern costs milliseconds (hundreds of look-alikes, case-folded):
# that was most of the engine's CPU per call. So `defang` finds a hex nonce without its
# pattern whenever it can do so exactly: when no character of the text can stand between
# two of the nonce's (a combining mark, or what matches one ignoring case) and each reads
# as at most one hex digit, the pattern matches exactly where the text, each character
# replaced by the digit it reads as, holds the nonce. Otherwise the pattern decides.
_HEX = "0123456789abcdef"
_GAP = r"[\u0300-\u036f]"  # what nonce_pattern allows between two characters


@lru_cache(maxsize=1)
def _hex_classes() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((d, re.compile(_char_class(d), re.IGNORECASE)) for d in _HEX)


@lru_cache(maxsize=1)
def _gap() -> re.Pattern[str]:
    return re.compile(_GAP, re.IGNORECASE)


@lru_cache(maxsize=65536)
def _reads_as(ch: str) -> str | None:
    """The hex digits whose pattern matches `ch` ("" for none), or None when `ch` can
    stand between two characters of a nonce."""
    if _gap().fullmatch(ch):
        return None
    return "".join(d for d, pat in _hex_classes() if pat.fullmatch(ch))


@lru_cache(maxsize=1)
def _ascii_digits() -> bytes | None:
    """A bytes.translate table: each ASCII character to the hex digit it reads as, others to
    NUL (None when some ASCII character is ambiguous or a gap: then no shortcut)."""
    table = bytearray(256)
    for o in range(128):
        got = _reads_as(chr(o))
        if got is None or len(got) > 1:
            return None
        table[o] = ord(got) if got else 0
    return bytes(table)


def _as_digits(text: str) -> str | None:
    """`text` with each character replaced by the hex digit it reads as (other characters
    become NUL or stay as they are, never a hex digit), position for position; None when
    the shortcut does not apply."""
    ascii_table = _ascii_digits()
    if ascii_table is None:
        return None
    if text.isascii():
        return text.encode("ascii").translate(ascii_table).decode("latin-1")
    table: dict[int, int] = {}
    for ch in set(text):
        if ord(ch) < 128:
            continue
        got = _reads_as(ch)
        if got is None or len(got) > 1:
            return None
        if got:
            table[ord(ch)] = ord(got)
    if not table:  # no non-ASCII character reads as a digit: each one becomes "?" (not a digit)
        return text.encode("ascii", "replace").translate(ascii_table).decode("latin-1")
    table.update((o, ascii_table[o]) for o in range(128))
    return text.translate(table)


def _replace_nonce(text: str, nonce: str) -> str:
    """`nonce_pattern(nonce).sub("[code]", text)`, without compiling the pattern when the
    shortcut above applies (the same leftmost, non-overlapping matches)."""
    digits = _as_digits(text) if nonce and not nonce.strip(_HEX) else None
    if digits is None:
        return nonce_pattern(nonce).sub("[code]", text)
    i = digits.find(nonce)
    if i < 0:
        return text
    out: list[str] = []
    pos = 0
    while i >= 0:
        out += (text[pos:i], "[code]")
        pos = i + len(nonce)
        i = digits.find(nonce, pos)
    out.append(text[pos:])
    return "".join(out)


def defang(text: str, nonce: str) -> str:
    """`text` as a model may safely see it between markers carrying `nonce`."""
    t = _break_runs(fold(text))
    if nonce:
        t = _replace_nonce(t, nonce)
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


_LABEL = re.compile(r"(?:candidate|response|answer|agent)?\s*#?\s*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)
_TRUE = ("true", "yes")
_FALSE = ("false", "no")


def _key(k: str) -> str:
    return " ".join(fold(k).casefold().replace("_", " ").replace("-", " ").split())


def canon_value(v: Any) -> Any:
    """A JSON value normalised for comparison: what a verdict parser would read it as.
    Numbers and booleans become tagged tuples (JSON has no tuples), so that true and 1 differ."""
    if v is None:
        return v
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        f = float(v)
        return ("num", f) if math.isfinite(f) else str(f)
    if isinstance(v, str):
        s = " ".join(fold(v).casefold().split())
        if s in _TRUE:
            return ("bool", True)
        if s in _FALSE:
            return ("bool", False)
        m = _LABEL.fullmatch(s)
        if m:
            return ("num", float(m.group(1)))
        return s
    if isinstance(v, list):
        return [canon_value(x) for x in v]
    if isinstance(v, dict):
        return {_key(str(k)): canon_value(x) for k, x in v.items()}
    return str(v)


def _copied(reply_obj: dict[str, Any], cand: dict[str, Any]) -> bool:
    """Every field of `reply_obj` is in `cand` with the same normalised value."""
    return bool(reply_obj) and all(k in cand and cand[k] == v for k, v in reply_obj.items())


def _squash(s: str) -> str:
    return " ".join(s.split())


def strip_echoes(reply: str, candidates: list[str]) -> tuple[str, int]:
    """The model's `reply` with every JSON object copied from a candidate blanked out.

    Both sides are folded first (so full-width braces in a candidate count as the JSON they
    turn into). A reply object counts as copied when its fields, compared by value after
    `canon_value`, are all in one object found in a candidate (the same object, or one with
    fields dropped), or when its text, whitespace aside, appears in a candidate. Returns the
    cleaned (folded) reply and how many objects were removed.
    """
    reply = fold(reply)
    if "{" not in reply:
        return reply, 0
    objs: list[dict[str, Any]] = []
    squashed: list[str] = []
    for c in candidates:
        c = fold(c)
        if "{" not in c:
            continue
        squashed.append(_squash(c))
        for _, _, v in json_objects(c):
            objs.append(canon_value(v))
            # objects nested in a candidate's object are copyable too
            objs.extend(canon_value(x) for x in _nested(v))
    if not squashed:
        return reply, 0
    removed = 0
    out = reply
    for start, end, v in reversed(json_objects(reply)):
        span = reply[start:end]
        cv = canon_value(v)
        if any(_copied(cv, o) for o in objs) or any(_squash(span) in s for s in squashed):
            out = out[:start] + " " * (end - start) + out[end:]
            removed += 1
    return out, removed


def _nested(v: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack = list(v.values()) if isinstance(v, dict) else []
    while stack and len(out) < 1000:
        x = stack.pop()
        if isinstance(x, dict):
            out.append(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out
