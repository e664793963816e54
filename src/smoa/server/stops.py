"""`stop` on the final answer: cut at the first stop sequence, whole or streamed.

The writer of the final answer gets the stop sequences as a sampling setting too, so a
backend usually stops there itself; this cut is what makes it hold for every method (mad's
vote copies a proposer's answer) and every backend. Our own code: twenty lines, no library
offers a streaming cut that holds back only a possible stop prefix.
"""

from __future__ import annotations


def cut(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text up to the first stop sequence, and whether one was found."""
    at = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text, False) if at < 0 else (text[:at], True)


class StopCutter:
    """Feed streamed pieces; get back what may be sent. A stop split across pieces is still cut:
    the tail that could begin a stop sequence is held back until the next piece decides."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self.held + piece
        out, found = cut(text, self.stops)
        keep = self._open_tail(text)
        if found and len(text) - keep >= len(out):  # no longer stop may still begin before the match
            self.stopped, self.held = True, ""
            return out
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def _open_tail(self, text: str) -> int:
        """The length of the longest tail of `text` that is a proper prefix of some stop."""
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if s.startswith(text[-n:]):
                    keep = n
                    break
        return keep

    def flush(self) -> str:
        if self.stopped:
            return ""
        out, found = cut(self.held, self.stops)
        self.held, self.stopped = "", found
        return out
