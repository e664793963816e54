"""Common types for benchmarks: Item, Score, Benchmark, data-path resolution."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "Item",
    "Score",
    "Benchmark",
    "JudgedBenchmark",
    "JudgeRequired",
    "default_data_root",
    "read_jsonl",
    "read_json_or_jsonl",
]


@dataclass(frozen=True)
class Item:
    """One benchmark question. ``prompt`` is ready to send to a model as the user message."""

    id: str
    prompt: str
    reference: Any
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Score:
    """One scored answer.

    ``value``: in [0, 1] for accuracy-style sets, else on the set's native scale (Just-Eval 1-5,
    MT-Bench 1-10, CEB bias 0-99 where lower is better). ``correct``: True/False where the set
    has a notion of correctness, None otherwise. ``detail``: what was extracted/compared; for
    judged sets ``detail["fallback"]`` is True when the verdict was unusable.
    """

    value: float
    correct: bool | None
    detail: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def fallback(self) -> bool:
        return bool(self.detail.get("fallback", False))


class JudgeRequired(RuntimeError):
    """Raised by ``score`` of an LLM-judged benchmark when no verdict was given."""


def default_data_root() -> Path | None:
    """``$SMOA_DATA_DIR`` if set, else None."""
    env = os.environ.get("SMOA_DATA_DIR")
    return Path(env) if env else None


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def read_json_or_jsonl(path: Path) -> list[dict]:
    """A JSON array file, or JSON Lines (BFCL ships JSONL with a .json name)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Benchmark:
    """Base class. Subclasses set ``name``, ``folder`` (its folder under the data root),
    ``filename`` (the file inside it, or None for multi-file sets) and implement
    ``_load(resolved_path)`` and ``score``."""

    name: ClassVar[str] = ""
    folder: ClassVar[str] = ""
    filename: ClassVar[str | None] = None
    needs_judge: ClassVar[bool] = False
    # score every proposal of every layer too (judge recall, oracle accuracy): for sets whose
    # scoring is cheap and exact
    checks_proposals: ClassVar[bool] = False
    description: ClassVar[str] = ""

    # ---- data -----------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike | None = None) -> Path:
        """Find this set's file (or folder) from the data root, the set's folder or the file."""
        if path is None:
            path = default_data_root()
            if path is None:
                raise FileNotFoundError(
                    f"{self.name}: no data path given and SMOA_DATA_DIR is not set"
                )
        p = Path(path).expanduser()
        cands: list[Path] = []
        if self.filename is None:
            cands = [p / self.folder, p]
            for c in cands:
                if c.is_dir() and self._looks_like_folder(c):
                    return c
        else:
            if p.is_file():
                return p
            cands = [p / self.folder / self.filename, p / self.filename]
            for c in cands:
                if c.is_file():
                    return c
        tried = ", ".join(str(c) for c in cands)
        raise FileNotFoundError(f"{self.name}: data not found (tried {tried})")

    def _looks_like_folder(self, folder: Path) -> bool:
        return True

    def load(
        self, path: str | os.PathLike | None = None, limit: int | None = None, offset: int = 0
    ) -> list[Item]:
        items = self._load(self.resolve(path))
        return _slice(items, limit, offset)

    def _load(self, path: Path) -> list[Item]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- scoring --------------------------------------------------------------------------
    def score(self, item: Item, answer_text: str) -> Score:  # pragma: no cover - abstract
        raise NotImplementedError

    async def ascore(self, item: Item, answer_text: str) -> Score:
        """Async scoring (code sets run the sandbox without blocking the loop)."""
        return await asyncio.to_thread(self.score, item, answer_text)

    def aggregate(self, scores: Iterable[Score]) -> dict[str, Any]:
        """Mean value, accuracy (over scores with a correct flag) and fallback count."""
        scores = list(scores)
        vals = [s.value for s in scores if not math.isnan(s.value)]
        good = [s.value for s in scores if not s.fallback and not math.isnan(s.value)]
        flags = [s.correct for s in scores if s.correct is not None]
        return {
            "benchmark": self.name,
            "n": len(scores),
            "mean": sum(vals) / len(vals) if vals else float("nan"),
            "mean_without_fallback": sum(good) / len(good) if good else float("nan"),
            "accuracy": (sum(flags) / len(flags)) if flags else None,
            "fallbacks": sum(1 for s in scores if s.fallback),
        }

    # ---- aggregation (the report reads these) ---------------------------------------------
    #: how the report's headline is formed from the rows' components (see :meth:`components`):
    #: "items" = mean of the item scores; "cells" = mean over every usable component of every
    #: item (FastChat: each turn's rating counts once); "component_means" = mean of the
    #: per-component means (Just-Eval: one mean per aspect, then their average)
    headline: ClassVar[str] = "items"
    #: components that make the headline under "component_means" (others are shown apart)
    headline_components: ClassVar[tuple[str, ...]] = ()
    #: lines the report prints under this set's tables (what is not there, and why)
    report_notes: ClassVar[tuple[str, ...]] = ()

    def components(self, detail: dict) -> dict[str, float]:
        """The parts of one row's score that the report aggregates (aspects, turns); empty
        when the item score is the only part."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _slice(items: Sequence[Item], limit: int | None, offset: int) -> list[Item]:
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0 or None")
    end = None if limit is None else offset + limit
    return list(items[offset:end])


class JudgedBenchmark(Benchmark):
    """A set scored by an LLM judge. The engine builds the judge request with
    :meth:`judge_messages`, calls a judge model (optionally constrained by
    :attr:`verdict_schema`), and turns the reply into a :class:`Score` with
    :meth:`parse_verdict`. ``score(item, answer, verdict=...)`` does the last step."""

    needs_judge: ClassVar[bool] = True
    #: JSON schema of the verdict object, for backends with structured output.
    verdict_schema: ClassVar[dict] = {}
    #: value used when a verdict cannot be read (conservative: worst for the judged answer)
    fallback_value: ClassVar[float] = 0.0

    def judge_messages(self, item: Item, answer_text: Any, **kw: Any) -> list[dict[str, str]]:
        raise NotImplementedError  # pragma: no cover

    def parse_verdict(self, item: Item, verdict_text: str, **kw: Any) -> Score:
        raise NotImplementedError  # pragma: no cover

    def score(self, item: Item, answer_text: Any, verdict: str | None = None, **kw: Any) -> Score:
        if verdict is None:
            raise JudgeRequired(
                f"{self.name} is scored by an LLM judge: build the request with "
                "judge_messages(item, answer), call the judge, then score(item, answer, verdict=...)"
            )
        return self.parse_verdict(item, verdict, **kw)

    def combine(self, item: Item, judgements: list[tuple[dict, Score]]) -> Score:
        """One item's score from several judgements (turns, orders): the mean of the usable
        ones; NaN with ``fallback`` when none is usable (left out of every mean)."""
        usable = [sc for _, sc in judgements if not sc.fallback and not math.isnan(float(sc.value))]
        value = sum(float(sc.value) for sc in usable) / len(usable) if usable else float("nan")
        return Score(value, None, {
            "judgements": [kw | {"value": None if math.isnan(float(sc.value)) else sc.value,
                                 "detail": sc.detail} for kw, sc in judgements],
            "fallback": not usable,
            "unparsed": sum(1 for _, sc in judgements if sc.fallback),
        })

    def _fallback(self, verdict_text: str, why: str, **extra: Any) -> Score:
        return Score(
            self.fallback_value, None,
            {"fallback": True, "reason": why, "raw": (verdict_text or "")[-2000:], **extra},
        )
