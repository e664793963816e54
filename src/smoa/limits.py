"""Concurrency limits that hold across queries: per endpoint, and global.

An `Engine` is made per query, so a limit that lives in the engine would only bound one
query. These limiters live on the backend object (per endpoint) or are passed in by the
caller (global), and every engine that uses them shares one count.

    limiter = Limiter(64)                      # at most 64 LLM calls in flight, all queries
    await asyncio.gather(*(Engine(p, limiter=limiter).run(q) for q in queries))

asyncio primitives belong to one event loop, so a `Limiter` keeps one semaphore per loop:
the same object works under successive `asyncio.run` calls (tests, `run_sync`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any


class Limiter:
    """At most `limit` holders at once, per running event loop. `Limiter(1)` runs calls one at a time."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a concurrency limit must be at least 1")
        self.limit = limit
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self.in_flight = 0
        self.peak = 0

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = asyncio.Semaphore(self.limit)
            self._sems[loop] = sem
        return sem

    async def acquire(self) -> None:
        await self._sem().acquire()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self._sem().release()

    async def __aenter__(self) -> Limiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Limiter({self.limit})"


_backend_limiters: weakref.WeakKeyDictionary[Any, Limiter] = weakref.WeakKeyDictionary()


def backend_limiter(backend: Any) -> Limiter | None:
    """The shared limiter of a backend object with `max_concurrency` set (None: unlimited)."""
    lim = getattr(backend, "max_concurrency", None)
    if not lim:
        return None
    got = _backend_limiters.get(backend)
    if got is None or got.limit != lim:
        got = Limiter(lim)
        _backend_limiters[backend] = got
    return got
