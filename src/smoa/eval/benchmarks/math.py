"""Rule-scored math sets: GSM8K, MATH-500, MMAU math.

GSM8K keeps smoa's numeric rules (the final number after ``####``; they agree with
math-verify on that set). MATH-500 and MMAU-math extract the answer with smoa's rules and
compare it with :func:`smoa.eval.equivalence.answers_equivalent` (math-verify, plus smoa's
rules for plain-text answers)."""

from __future__ import annotations

import re
from pathlib import Path

from ..equivalence import answers_equivalent
from ..scoring import (
    extract_final_number,
    last_boxed,
    normalize_number,
    numbers_equal,
)
from .base import Benchmark, Item, Score, read_jsonl

__all__ = ["GSM8K", "Math500", "MMAUMath", "extract_math_answer", "extract_mmau_answer"]

GSM8K_INSTRUCTION = (
    "Work through the problem step by step. Finish with a last line of the form "
    "'#### <number>' that holds only the final numeric answer."
)

MATH_INSTRUCTION = (
    "Solve the problem step by step and write the final answer in LaTeX inside \\boxed{}."
)


class GSM8K(Benchmark):
    checks_proposals = True  # cheap, exact scoring: every proposal is scored too
    name = "gsm8k"
    folder = "gsm8k"
    filename = "test.jsonl"
    description = "Grade-school math word problems (1319 test items); exact numeric match."

    def _load(self, path: Path) -> list[Item]:
        items = []
        for i, row in enumerate(read_jsonl(path)):
            ref = normalize_number(row["answer"].rsplit("####", 1)[-1])
            items.append(Item(
                id=f"gsm8k/{i}",
                prompt=f"{row['question'].strip()}\n\n{GSM8K_INSTRUCTION}",
                reference=ref,
                meta={"index": i, "question": row["question"], "solution": row["answer"]},
            ))
        return items

    def score(self, item: Item, answer_text: str) -> Score:
        pred = extract_final_number(answer_text or "")
        ok = numbers_equal(pred, item.reference)
        return Score(1.0 if ok else 0.0, ok, {"pred": pred, "ref": item.reference})


_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)


def extract_math_answer(text: str) -> str | None:
    """The last \\boxed{} content; else what follows "The answer is"; else None."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    ms = list(_ANSWER_IS_RE.finditer(text))
    if ms:
        tail = text[ms[-1].end():].strip().split("\n")[0]
        m = re.match(r"\$+((?:\\\$|[^$])+)\$+", tail)  # "$\$36$": an escaped dollar inside
        if m:
            return m.group(1)
        return tail.rstrip(". ") or None
    return None


class Math500(Benchmark):
    checks_proposals = True  # cheap, exact scoring: every proposal is scored too
    name = "math500"
    folder = "math500"
    filename = "test.jsonl"
    description = "MATH-500 (Lightman et al.): competition math, boxed answer checked with math-verify."

    def _load(self, path: Path) -> list[Item]:
        items = []
        for i, row in enumerate(read_jsonl(path)):
            items.append(Item(
                id=row.get("unique_id") or f"math500/{i}",
                prompt=f"{row['problem'].strip()}\n\n{MATH_INSTRUCTION}",
                reference=row["answer"],
                meta={"index": i, "subject": row.get("subject"), "level": row.get("level"),
                      "problem": row["problem"]},
            ))
        return items

    def score(self, item: Item, answer_text: str) -> Score:
        pred = extract_math_answer(answer_text or "")
        ok = answers_equivalent(pred, item.reference)
        return Score(1.0 if ok else 0.0, ok, {"pred": pred, "ref": item.reference})


_MMAU_MARK_RE = re.compile(r"#\s*ANSWER\s*#\s*:?", re.IGNORECASE)


def extract_mmau_answer(text: str) -> str | None:
    """What follows the last ``#ANSWER#:`` marker; else the last \\boxed{}; else the last
    non-empty line."""
    if not text:
        return None
    ms = list(_MMAU_MARK_RE.finditer(text))
    if ms:
        tail = text[ms[-1].end():].strip()
        line = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        boxed = last_boxed(line)
        return (boxed if boxed is not None else line) or None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _clean_mmau(ans: str) -> str:
    s = ans.strip().strip("$").strip().rstrip(".")
    s = re.sub(r"^(?:[a-zA-Z]\s*=\s*)", "", s)  # "x = 3"
    s = re.sub(r"\s+(?:and|or)\s+(?:[a-zA-Z]\s*=\s*)?", ", ", s)  # "2 and 3", "x=2 or x=3"
    s = re.sub(r",\s*[a-zA-Z]\s*=\s*", ", ", s)  # "x=2, x=3"
    return s


class MMAUMath(Benchmark):
    checks_proposals = True  # cheap, exact scoring: every proposal is scored too
    name = "mmau-math"
    folder = "mmau"
    filename = "math_standard_20240712.jsonl"
    description = "MMAU math (1000 DeepMind-Mathematics-style items); math-verify equivalence."

    def _load(self, path: Path) -> list[Item]:
        items = []
        for row in read_jsonl(path):
            out = row["output"]
            items.append(Item(
                id=f"mmau-math/{out['id']}",
                prompt=row["input"],
                reference=out["gt_answer"],
                meta={"problem": out.get("raw_problem")},
            ))
        return items

    def score(self, item: Item, answer_text: str) -> Score:
        raw = extract_mmau_answer(answer_text or "")
        pred = _clean_mmau(raw) if raw is not None else None
        ok = answers_equivalent(pred, _clean_mmau(str(item.reference)), ordered=False)
        return Score(1.0 if ok else 0.0, ok, {"pred": pred, "ref": item.reference})
