"""Extract a short final answer from free text, for majority votes (pure functions)."""

from __future__ import annotations

from collections import Counter

# One answer extractor for the whole project, shared with the GSM8K/MATH scorers (which
# re-export it from smoa.eval.scoring and test it on the sets' gold answers).
from .extract import extract_final_number, last_boxed, normalize_number


def extract_answer(text: str) -> str | None:
    """The final answer of a response: a non-numeric \\boxed{} answer as written, else the
    number after '####', 'The answer is' or in \\boxed{}, else the last number."""
    b = last_boxed(text)
    if b is not None and b.strip() and normalize_number(b) is None:
        return " ".join(b.split())
    return extract_final_number(text)


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


def normalized(text: str) -> str:
    """Text compared for sameness: case and runs of white space do not count."""
    return " ".join(text.split()).lower()


def agreement(texts: list[str]) -> dict[str, str] | None:
    """Whether at least two responses agree: the same normalised text, else the same extracted
    final answer (every one must have one). {"by": "text"|"answer", ...} or None."""
    if len(texts) < 2:
        return None
    if len({normalized(t) for t in texts}) == 1:
        return {"by": "text"}
    answers = [extract_answer(t) for t in texts]
    first = answers[0]
    if first is not None and all(a == first for a in answers):
        return {"by": "answer", "answer": first}
    return None
