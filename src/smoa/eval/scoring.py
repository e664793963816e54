"""Answer extraction and comparison: numbers, LaTeX/sympy math, code blocks, judge JSON.

Pure functions, no model calls. ``sympy`` is imported lazily, only when a string comparison
is not enough. Math answers from a model are never ``eval``-ed as Python: before anything
reaches ``sympy.parse_expr`` it must pass :func:`_safe_plain_expr` (a character and
identifier allow-list, a length cap and a cap on exponent towers).
"""

from __future__ import annotations

import functools
import math
import random
import re
from typing import Any

# Finding an answer in free text is core (votes use it too): smoa.extract. Re-exported here,
# with the private names the benchmark modules use.
from ..extract import (
    _FENCE_RE,
    _balanced,
    extract_final_number,
    extract_json,
    last_boxed,
    normalize_number,
)
from ..extract import json_candidates as _json_candidates  # noqa: F401 (benchmarks.bfcl)
from ..extract import loads_lenient as _loads_lenient  # noqa: F401 (benchmarks.bfcl)

__all__ = [
    "extract_final_number",
    "normalize_number",
    "numbers_equal",
    "last_boxed",
    "normalize_latex",
    "math_equal",
    "to_sympy",
    "latex_parser_available",
    "extract_code",
    "extract_json",
    "split_top_level",
]

# --------------------------------------------------------------------------------------------
# Numbers (GSM8K style)

def numbers_equal(a: str | None, b: str | None, rel_tol: float = 1e-9) -> bool:
    na = normalize_number(a) if a is not None else None
    nb = normalize_number(b) if b is not None else None
    if na is None or nb is None:
        return False
    if na == nb:
        return True
    try:
        return math.isclose(float(na), float(nb), rel_tol=rel_tol, abs_tol=1e-9)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# LaTeX answers (MATH style)


_UNIT_WORDS = (
    "degrees|degree|cm|m|km|mm|inches|inch|in|feet|foot|ft|yards|yard|miles|mile|meters|meter|"
    "units|unit|square|sq|cubic|cents|cent|dollars|dollar|hours|hour|minutes|minute|seconds|"
    "second|days|day|weeks|week|years|year|mph|pounds|pound|lbs|ounces|ounce|grams|gram|kg|"
    "liters|liter|ml|gallons|gallon|people|students|points|ways|percent"
)
_UNIT_TEXT_RE = re.compile(
    r"\\(?:text|textbf|mbox|mathrm)\{\s*(?:(?:" + _UNIT_WORDS + r")\b[\s\^\d{}]*)+\}\s*$"
)
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{")


def _unwrap_text_cmds(s: str) -> str:
    out = s
    for _ in range(20):
        m = _TEXT_CMD_RE.search(out)
        if not m:
            break
        got = _balanced(out, m.end() - 1)
        if not got:
            break
        out = out[: m.start()] + got[0] + out[got[1]:]
    return out


def _fix_short_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d+|[a-zA-Z])", r"\\sqrt{\1}", s)
    return s


def normalize_latex(answer: str) -> str:
    """A canonical string for a LaTeX answer (see module docs; conservative on purpose)."""
    s = answer.strip()
    s = s.strip("$").strip()
    if s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2]
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "")
    s = re.sub(r"\\q?quad", " ", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = s.replace("\\degree", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "")
    s = _UNIT_TEXT_RE.sub("", s) if _UNIT_TEXT_RE.search(s) and not s.lstrip().startswith(
        "\\text") else s
    s = _unwrap_text_cmds(s)
    s = _fix_short_fracs(s)
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    # drop whitespace, but keep one space that ends a command name before a letter (\cot x)
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = s.rstrip(".")
    # "x=5" -> "5" (a single variable, a single '=')
    m = re.fullmatch(r"[a-zA-Z]=([^=]+)", s)
    if m and not re.search(r"[<>]", s):
        s = m.group(1)
    # "0.50" -> "0.5", ".5" -> "0.5", "1,000" (thousands) -> "1000"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d*\.\d+|-?\d+\.?", s):
        n = normalize_number(s)
        if n is not None:
            s = n
    return s


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside any (), [], {} nesting."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p != ""] if len(parts) > 1 else parts


@functools.lru_cache(maxsize=1)
def latex_parser_available() -> bool:
    """True if ``sympy.parsing.latex.parse_latex`` works (needs antlr4-python3-runtime 4.11)."""
    try:
        from sympy.parsing.latex import parse_latex

        parse_latex("\\frac{1}{2}")
        return True
    except Exception:
        return False


_ALLOWED_NAMES = {
    "sqrt", "pi", "E", "e", "I", "i", "oo", "sin", "cos", "tan", "cot", "sec", "csc", "log",
    "ln", "exp", "asin", "acos", "atan", "sinh", "cosh", "tanh", "Abs", "abs", "infty",
}
_PLAIN_CHARS_RE = re.compile(r"[0-9A-Za-z_+\-*/^().,\s]*")


def _safe_plain_expr(s: str) -> bool:
    if len(s) > 200 or "__" in s or not _PLAIN_CHARS_RE.fullmatch(s):
        return False
    for name in re.findall(r"[A-Za-z_]\w*", s):
        if len(name) > 1 and name not in _ALLOWED_NAMES:
            return False
    # exponent towers such as 9**9**9 or a huge literal exponent would hang sympy
    if re.search(r"(\*\*|\^)\s*\(?\s*-?\d{4,}", s):
        return False
    if len(re.findall(r"\*\*|\^", s)) > 6:
        return False
    return not re.search(r"(\*\*|\^)[^+\-*/,]*(\*\*|\^)", s.replace(" ", ""))


def _safe_latex(s: str) -> bool:
    if re.search(r"\^\s*\{?\s*-?\d{4,}", s) or s.count("^") > 6:
        return False
    # a power inside an exponent (towers like 9^{9^{9}}) could take forever to evaluate
    for m in re.finditer(r"\^\s*\{", s):
        got = _balanced(s, m.end() - 1)
        if got and "^" in got[0]:
            return False
    return True


def _latex_to_plain(s: str) -> str:
    """A small LaTeX-to-sympy-syntax conversion: fractions, roots, pi, products, powers."""
    out = s
    for _ in range(10):
        m = re.search(r"\\frac\{", out)
        if not m:
            break
        num = _balanced(out, m.end() - 1)
        if not num:
            break
        den = _balanced(out, num[1])
        if not den:
            break
        out = out[: m.start()] + f"(({num[0]})/({den[0]}))" + out[den[1]:]
    for _ in range(10):
        m = re.search(r"\\sqrt\[([^\]]+)\]\{", out)
        if m:
            arg = _balanced(out, m.end() - 1)
            if not arg:
                break
            out = out[: m.start()] + f"(({arg[0]})**(1/({m.group(1)})))" + out[arg[1]:]
            continue
        m = re.search(r"\\sqrt\{", out)
        if not m:
            break
        arg = _balanced(out, m.end() - 1)
        if not arg:
            break
        out = out[: m.start()] + f"sqrt({arg[0]})" + out[arg[1]:]
    out = (out.replace("\\pi", " pi ").replace("\\cdot", "*").replace("\\times", "*")
           .replace("\\infty", "oo").replace("\\ln", "log").replace("\\log", "log"))
    out = re.sub(r"\\(sin|cos|tan|cot|sec|csc|exp)", r"\1", out)
    out = out.replace("{", "(").replace("}", ")").replace("^", "**")
    return out


def to_sympy(answer: str, *, latex: bool = True) -> Any | None:
    """Parse an answer into a sympy expression, or None. Tries plain sympy syntax (safely),
    then ``parse_latex`` where available, then the small LaTeX conversion above."""
    s = answer.strip()
    if not s or len(s) > 300:
        return None
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            convert_xor,
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )
    except ImportError:
        return None
    transforms = standard_transformations + (implicit_multiplication_application, convert_xor)
    local = {"e": sympy.E, "i": sympy.I, "ln": sympy.log, "infty": sympy.oo, "E": sympy.E}

    def plain(expr: str) -> Any | None:
        if not _safe_plain_expr(expr):
            return None
        try:
            return parse_expr(expr, transformations=transforms, local_dict=dict(local),
                              evaluate=False)
        except Exception:
            return None

    if "\\" not in s and "{" not in s:
        got = plain(s)
        if got is not None:
            return got
    if not latex:
        return None
    if latex_parser_available() and _safe_latex(s):
        try:
            from sympy.parsing.latex import parse_latex

            expr = parse_latex(s)
            consts = {"e": sympy.E, "i": sympy.I, "pi": sympy.pi}
            named = {x: consts[x.name] for x in expr.free_symbols if x.name in consts}
            return expr.subs(named) if named else expr
        except Exception:
            pass
    return plain(_latex_to_plain(s))


def _numeric_equal(a: Any, b: Any, tol: float = 1e-6) -> bool:
    import sympy

    try:
        if a == b:
            return True
        if not a.free_symbols and not b.free_symbols:
            ea, eb = a.doit(), b.doit()
            if ea.is_Rational and eb.is_Rational:  # exact for integers/fractions
                return bool(ea == eb)
        syms = sorted((a.free_symbols | b.free_symbols), key=str)
        if set(map(str, a.free_symbols)) != set(map(str, b.free_symbols)):
            return False
        rng = random.Random(12345)
        trials, agree = 0, 0
        for _ in range(6):
            subs = {x: sympy.Float(rng.uniform(0.3, 2.7)) for x in syms}
            try:
                va = complex(sympy.N(a.subs(subs) if syms else a, 30))
                vb = complex(sympy.N(b.subs(subs) if syms else b, 30))
            except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                continue
            if any(map(math.isnan, (va.real, va.imag, vb.real, vb.imag))):
                continue
            trials += 1
            if abs(va - vb) <= tol * max(1.0, abs(va), abs(vb)):
                agree += 1
            else:
                return False
            if not syms:
                break
        return trials > 0 and agree == trials
    except Exception:
        return False


_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}


def math_equal(pred: str | None, ref: str | None, *, ordered: bool | None = None) -> bool:
    """True if two math answers are equal: same normalised string, or sympy-equivalent.

    Comma-separated answers compare element-wise; inside (), [] they are ordered (tuples,
    intervals: bracket kinds must match), bare lists compare as multisets unless ``ordered``.
    """
    if pred is None or ref is None:
        return False
    p, r = normalize_latex(pred), normalize_latex(ref)
    if not p or not r:
        return False
    if p == r:
        return True
    # element-wise for tuples/intervals/lists
    p_wrap = _strip_wrapping(p)
    r_wrap = _strip_wrapping(r)
    p_parts, r_parts = split_top_level(p_wrap[1]), split_top_level(r_wrap[1])
    if len(p_parts) > 1 or len(r_parts) > 1:
        if len(p_parts) != len(r_parts):
            return False
        if p_wrap[0] != r_wrap[0] and (p_wrap[0] or r_wrap[0]):
            if {p_wrap[0], r_wrap[0]} != {"", "\\{"}:  # "1, 2" vs "\{1, 2\}" is fine
                return False
        keep_order = ordered if ordered is not None else p_wrap[0] in ("(", "[")
        if keep_order:
            return all(_atom_equal(x, y) for x, y in zip(p_parts, r_parts, strict=True))
        remaining = list(r_parts)
        for x in p_parts:
            for k, y in enumerate(remaining):
                if _atom_equal(x, y):
                    del remaining[k]
                    break
            else:
                return False
        return True
    return _atom_equal(p, r)


def _strip_wrapping(s: str) -> tuple[str, str]:
    for open_, close in _BRACKETS.items():
        if s.startswith(open_) and s.endswith(close):
            inner = s[len(open_): len(s) - len(close)]
            # only if the brackets wrap the whole thing
            depth = 0
            ok = True
            for c in inner:
                depth += c in "([{"
                depth -= c in ")]}"
                if depth < 0:
                    ok = False
                    break
            if ok:
                return open_, inner
    for open_, close in (("(", "]"), ("[", ")")):  # half-open intervals
        if s.startswith(open_) and s.endswith(close):
            return open_ + close, s[1:-1]
    return "", s


def _atom_equal(a: str, b: str) -> bool:
    na, nb = normalize_latex(a), normalize_latex(b)
    if na == nb:
        return True
    if numbers_equal(na, nb):
        return True
    if re.search(r"[<>=]|\\[lg]eq?|\\in|\\cup", na + nb):
        return False
    ea, eb = to_sympy(na), to_sympy(nb)
    if ea is None or eb is None:
        return False
    return _numeric_equal(ea, eb)


# --------------------------------------------------------------------------------------------
# Code blocks

def extract_code(text: str, entry_point: str | None = None) -> str:
    """Python code from a model answer: the fenced ``python`` block (the one defining
    ``entry_point`` if several), else any fenced block, else the whole text."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    py = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    other = [b for lang, b in blocks if lang in ("",)]
    for group in (py, other):
        if not group:
            continue
        if entry_point:
            for b in group:
                if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b):
                    return b
        for b in group:
            if re.search(r"^\s*(def|class)\s", b, re.MULTILINE):
                return b
        return group[0]
    stripped = text.strip("\n")
    m = re.match(r"```[A-Za-z0-9]*\n", stripped)  # an unclosed fence
    if m:
        stripped = stripped[m.end():]
    return stripped.rstrip("`\n") + "\n"
