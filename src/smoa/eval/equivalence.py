"""Maths answer equivalence for MATH-500 and MMAU-math: HuggingFace ``math-verify`` first,
smoa's own rules only where they are better.

The split of work, measured on a bank of (gold, reply) pairs built from the published sets
(``tests/eval/test_math_bank.py``; figures in BENCHMARKS.md, "Scoring"):

- **Extraction stays smoa's** (``\\boxed{}``, "the answer is", ``#ANSWER#``, ``#### N``):
  math-verify reads a whole reply less reliably than it compares two extracted answers.
- **Comparison is math-verify's** (``math_verify.parse`` + ``math_verify.verify``): mixed
  numbers, decimals against fractions, units in ``\\text{}``/``\\mbox{}``, thousands
  separators, ``\\pm`` against listed roots, sets and unions in any order, ``x \\in [a, b]``.
- **Plain-text answers stay smoa's** (names, words, multiple-choice letters): math-verify
  reads a bare ``Evelyn`` as a product of six symbols (so ``$Evnely$`` matches it) and finds
  nothing in "The answer is Evelyn."; here a text gold is compared as words, ignoring case.
- ``°`` becomes ``^\\circ`` before math-verify reads an answer (it does not read
  ``\\boxed{90°}``).
- **Sympy-syntax answers** (MMAU golds such as ``v**(656/3)`` or ``2*v*(v - 4)``) are
  rewritten as LaTeX by text substitution (``**`` to ``^{}``, ``*`` to ``\\cdot``; nothing is
  evaluated) and then read by math-verify, which cannot read ``**`` itself.
- Where math-verify cannot read either side at all, the old rules (``scoring.math_equal``)
  decide.

math-verify's own time-outs use ``signal.alarm`` and so only work in a main thread, and the
eval runner scores in worker threads; sympy cannot be stopped from outside. So the
comparison runs in one long-lived child process (``python -m smoa.eval.equivalence
--serve``) with math-verify's time-outs on, and the parent kills and replaces the child if a
comparison still overruns. Answers are also screened first (:func:`_safe`: a length cap, no
exponent towers, no exponent above 10,000, no factorial of a big number).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .scoring import _TEXT_CMD_RE as _TEXT_WRAP_RE
from .scoring import _balanced, math_equal
from .scoring import _unwrap_text_cmds as _unwrap_text

__all__ = ["answers_equivalent", "is_text_answer", "text_equal", "MATH_VERIFY_EXTRA"]

MATH_VERIFY_EXTRA = "math-verify is not installed: pip install 'smoa[eval]' (it brings math-verify)"

MAX_ANSWER_CHARS = 400

def _text_form(s: str) -> str:
    """Words of a plain-text answer: no LaTeX wrappers, no markup, no case, no end dot."""
    t = _unwrap_text(s.strip())
    t = t.replace("\\ ", " ").replace("~", " ")
    t = t.strip().strip("$*_").strip()
    t = t.rstrip(".!").strip()
    if t.startswith("(") and t.endswith(")"):
        t = t[1:-1]
    return re.sub(r"\s+", " ", t).strip().casefold()


_TEXT_GOLD_RE = re.compile(r"[A-Za-z][A-Za-z' \-]*")


def is_text_answer(gold: str) -> bool:
    """True for a gold that is words, not maths: ``\\text{Evelyn}``, ``\\text{east}``,
    ``\\text{(C)}``. A bare one-letter gold (``x``) or a gold with digits is maths."""
    s = gold.strip().strip("$").strip()
    if not _TEXT_WRAP_RE.match(s):
        return False
    t = _unwrap_text(s).strip()
    if t.startswith("(") and t.endswith(")"):  # multiple choice: (C)
        return bool(re.fullmatch(r"\([A-Za-z]\)", t))
    return bool(_TEXT_GOLD_RE.fullmatch(t)) and sum(c.isalpha() for c in t) >= 2


def text_equal(pred: str, gold: str) -> bool:
    return bool(pred) and _text_form(pred) == _text_form(gold)


# ------------------------------------------------------------------------- guards

_FACTORIAL_RE = re.compile(r"\d{3,}\s*[)}]*\s*!")
_STACKED_POWER_RE = re.compile(r"\^\s*(?:\{[^{}]*\}|\\[a-zA-Z]+|-?\d+|\w)\s*\^")
_EXP_NUM_RE = re.compile(r"\(?\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?\s*\)?")
MAX_EXPONENT = 10_000
MAX_POWERS = 8


def _exponents(latex: str) -> list[str] | None:
    """The exponent of every ``^`` (braced group or next token); None if a brace is open."""
    out = []
    for m in re.finditer(r"\^\s*", latex):
        j = m.end()
        if j < len(latex) and latex[j] == "{":
            got = _balanced(latex, j)
            if got is None:
                return None
            out.append(got[0])
        else:
            tok = re.match(r"\\[a-zA-Z]+|-?\d+|.", latex[j:])
            out.append(tok.group(0) if tok else "")
    return out


def _safe(s: str) -> bool:
    """Screen an answer before sympy sees it: short, no factorial of a big number, no
    exponent towers, no exponent above MAX_EXPONENT (9^{9^{9}} or 2^{99999999} would hang)."""
    if len(s) > MAX_ANSWER_CHARS or "__" in s:
        return False
    if _FACTORIAL_RE.search(s):
        return False
    t = _sympy_to_latex(s) if _is_sympy_syntax(s) else s
    if t.count("^") > MAX_POWERS or _STACKED_POWER_RE.search(t):  # 9**9**9 reads as 9^{9}^{9}
        return False
    exps = _exponents(t)
    if exps is None:
        return False
    for e in exps:
        if "^" in e:
            return False
        e = re.sub(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}", r"\1/\2", e).strip()
        m = _EXP_NUM_RE.fullmatch(e)
        if m:
            num, den = float(m.group(1)), float(m.group(2) or 1)
            if den and abs(num / den) > MAX_EXPONENT:
                return False
        elif re.search(r"\d{6,}", e):  # a big literal inside a symbolic exponent
            return False
    return True


# ------------------------------------------------------------------------- parsing


def _mv():
    try:
        import math_verify
    except ImportError as e:  # pragma: no cover - the eval extra brings it
        raise RuntimeError(MATH_VERIFY_EXTRA) from e
    # math-verify warns once that its signal time-out is off; we guard inputs instead
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


def _is_sympy_syntax(s: str) -> bool:
    """An answer written for Python/sympy (``v**(2/3)``, ``2*x*(x - 1)``), not LaTeX."""
    return "\\" not in s and "{" not in s and ("**" in s or re.search(r"[\w)]\s*\*\s*[\w(]", s)
                                               is not None)


def _sympy_to_latex(s: str) -> str:
    """Sympy/Python syntax as LaTeX, by text rewriting only (nothing is evaluated):
    ``x**(2/3)`` -> ``x^{(2/3)}``, ``x**2`` -> ``x^{2}``, ``2*x`` -> ``2 \\cdot x``."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("**", i):
            j = i + 2
            while j < len(s) and s[j] == " ":
                j += 1
            if j < len(s) and s[j] == "(":
                depth, k = 0, j
                while k < len(s):
                    depth += s[k] == "("
                    depth -= s[k] == ")"
                    if depth == 0:
                        break
                    k += 1
                out.append("^{" + s[j:k + 1] + "}")
                i = k + 1
            else:
                m = re.match(r"-?\w+", s[j:])
                tok = m.group(0) if m else ""
                out.append("^{" + tok + "}")
                i = j + len(tok)
            continue
        out.append(" \\cdot " if s[i] == "*" else s[i])
        i += 1
    return "".join(out)


def _sympy_side(s: str, timeout: int | None) -> list[Any]:
    """math-verify's reading of a sympy-syntax answer (a comma list becomes a set)."""
    try:
        out = _mv().parse("$" + _sympy_to_latex(s) + "$", parsing_timeout=timeout)
    except Exception:
        return []
    return out if any(not isinstance(x, str) for x in out) else []


def _prepare_latex(s: str) -> str:
    s = s.strip()
    if s.startswith("$") or s.startswith("\\(") or s.startswith("\\["):
        s = s.strip("$").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
    return s.replace("°", "^\\circ").replace("\\degree", "^\\circ")


def _parse_side(s: str, timeout: int | None = None) -> list[Any]:
    """math-verify's parse of one extracted answer (``[]`` when it reads nothing)."""
    mv = _mv()
    if _is_sympy_syntax(s):
        return _sympy_side(s, timeout)
    try:
        out = mv.parse(f"${_prepare_latex(s)}$", parsing_timeout=timeout)
    except Exception:
        return []
    # a list holding only the raw string means nothing was understood
    return out if any(not isinstance(x, str) for x in out) else []


def compare_with_math_verify(pred: str, gold: str, timeout: int | None = None) -> str:
    """"equal", "different", "none" (math-verify reads neither side) or "one" (only one).
    ``timeout`` (seconds) uses math-verify's own signal time-outs: main thread only."""
    g, p = _parse_side(gold, timeout), _parse_side(pred, timeout)
    if g and p:
        try:
            return "equal" if _mv().verify(g, p, timeout_seconds=timeout) else "different"
        except Exception:
            return "different"
    return "none" if not g and not p else "one"


# ------------------------------------------------------------------------- the worker
# sympy cannot be interrupted from another thread, and the runner scores in threads: a
# reply such as (x+1)^{10000} would hold a thread, and the run, for good. So math-verify
# runs in a child process (its main thread, where math-verify's own time-outs work), and
# the child is killed and replaced when it overruns WORKER_TIMEOUT_S.

MV_TIMEOUT_S = 5  # math-verify's own limit (its default) per parse and per comparison, in the child
WORKER_TIMEOUT_S = 60.0  # the parent's limit for one whole comparison


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        import smoa

        root = str(Path(smoa.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return subprocess.Popen(
            [sys.executable, "-m", "smoa.eval.equivalence", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, text=True, encoding="utf-8", bufsize=1,
        )

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def compare(self, pred: str, gold: str, timeout: float = WORKER_TIMEOUT_S) -> str | None:
        """The child's verdict, or None when it overran ``timeout`` (it is then replaced)."""
        with self._lock:
            for _attempt in range(2):
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                proc = self._proc
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(json.dumps([pred, gold]) + "\n")
                    proc.stdin.flush()
                    ready, _, _ = select.select([proc.stdout], [], [], timeout)
                    line = proc.stdout.readline() if ready else None
                except (BrokenPipeError, OSError, ValueError):
                    line = ""
                if line is None:  # overran: kill it, the next call starts a fresh one
                    self._kill()
                    self.restarts += 1
                    return None
                if line:
                    return json.loads(line)
                self._kill()  # died (or never started): once more, then a clear error
            _mv()  # raises the install hint if math-verify is what is missing
            raise RuntimeError("the maths scorer's math-verify process keeps dying: run "
                               "`python -m smoa.eval.equivalence --serve` to see why")

    def close(self) -> None:
        with self._lock:
            self._kill()


_WORKER = _Worker()
atexit.register(_WORKER.close)


def _serve() -> None:
    """The child: one JSON ``[pred, gold]`` per line in, one JSON verdict per line out."""
    _mv()
    for line in sys.stdin:
        pred, gold = json.loads(line)
        try:
            out = compare_with_math_verify(pred, gold, timeout=MV_TIMEOUT_S)
        except Exception:
            out = "different"
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def answers_equivalent(pred: str | None, gold: str | None, *, ordered: bool | None = None) -> bool:
    """True if the extracted answer ``pred`` means the same as ``gold``.

    ``ordered=False`` (MMAU) treats a bare comma list as a set on both sides, as before. A
    comparison that overruns its time limit is not equal (math-verify's rule too)."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if not pred or not gold:
        return False
    if is_text_answer(gold):
        return text_equal(pred, gold)
    if not (_safe(pred) and _safe(gold)):
        return False
    got = _WORKER.compare(pred, gold)
    if got is None or got in ("equal", "different"):
        return got == "equal"
    if got == "none":  # neither side is maths math-verify can read: the old rules
        return math_equal(pred, gold, ordered=ordered)
    # one side unreadable: the old rules may still match a plain string, never a number
    return math_equal(pred, gold, ordered=ordered) and not _has_digit(pred + gold)


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
