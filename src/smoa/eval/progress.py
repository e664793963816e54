"""A one-line progress bar on stderr: items done/total, errors, tokens so far, elapsed and ETA.

Plain carriage-return redraws; silent when the stream is not a terminal (logs stay clean).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt_s(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _fmt_n(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


class Progress:
    def __init__(
        self, total: int, done: int = 0, label: str = "", stream: TextIO | None = None,
        enabled: bool | None = None, width: int = 24, min_interval_s: float = 0.2,
    ) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total = total
        self.start_done = done  # finished by earlier runs
        self.done = done
        self.errors = 0
        self.tokens = 0
        self.label = label
        self.width = width
        self.min_interval_s = min_interval_s
        self.t0 = time.monotonic()
        self._last = 0.0
        self._shown = False
        self.draw(force=True)

    def update(self, row: Any = None, n: int = 1) -> None:
        self.done += n
        if row is not None:
            self.tokens += int(getattr(row, "total_tokens", 0) or 0) + int(getattr(row, "judge_tokens", 0) or 0)
            self.errors += 1 if getattr(row, "error", None) else 0
        self.draw()

    def line(self) -> str:
        total = max(self.total, 1)
        frac = min(1.0, self.done / total)
        fill = int(round(frac * self.width))
        bar = "#" * fill + "-" * (self.width - fill)
        elapsed = time.monotonic() - self.t0
        ran = self.done - self.start_done
        left = self.total - self.done
        eta = _fmt_s(elapsed / ran * left) if ran > 0 and left > 0 else ("0s" if left <= 0 else "?")
        err = f" | {self.errors} err" if self.errors else ""
        return (
            f"{self.label} [{bar}] {self.done}/{self.total} ({frac:.0%}){err} | "
            f"{_fmt_n(self.tokens)} tok | {_fmt_s(elapsed)} elapsed, ETA {eta}"
        )

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s and self.done < self.total:
            return
        self._last = now
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
