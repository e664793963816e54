"""Admission: at most `max_in_flight` queries run; up to `max_queue` more wait, first come first
served, for at most `queue_timeout_s`; only then a 429 with a Retry-After estimate.

Our own code (sixty lines): a semaphore cannot bound its waiters, time them out, or hand a
freed slot to the next waiter without a window in which a newcomer takes it first.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

from .errors import ApiError


class Admission:
    def __init__(self, max_in_flight: int, max_queue: int, queue_timeout_s: float) -> None:
        self.limit = max_in_flight
        self.max_queue = max_queue
        self.timeout_s = queue_timeout_s
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.mean_s = 1.0  # running mean of query durations, for Retry-After

    @property
    def queued(self) -> int:
        return sum(1 for f in self.waiters if not f.done())

    def retry_after_s(self) -> int:
        """About when a slot should be free for one more query: the queue ahead, drained
        `limit` at a time, at the mean duration of recent queries."""
        return max(1, math.ceil(self.mean_s * (self.queued + 1) / self.limit))

    def _too_busy(self, why: str) -> ApiError:
        return ApiError(
            429, f"{why}: retry after the Retry-After header's seconds", "rate_limit_error",
            "rate_limit_exceeded", headers={"Retry-After": str(self.retry_after_s())},
        )

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue when all are busy. Raises ApiError(429)."""
        if self.in_flight < self.limit and not self.queued:
            self.in_flight += 1
            return
        if self.queued >= self.max_queue:
            raise self._too_busy(f"too many queries: {self.in_flight} running and {self.queued} waiting (the limits)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            async with asyncio.timeout(self.timeout_s):
                await fut
        except BaseException as e:
            self._drop(fut)
            if isinstance(e, TimeoutError):
                raise self._too_busy(f"no query slot came free within {self.timeout_s:g} s of waiting") from None
            raise

    def _drop(self, fut: asyncio.Future[None]) -> None:
        if fut in self.waiters:
            self.waiters.remove(fut)
        if fut.done() and not fut.cancelled():
            self.release()  # a slot was handed to us as we gave up: pass it on
        else:
            fut.cancel()

    def release(self, duration_s: float | None = None) -> None:
        if duration_s is not None:
            self.mean_s = 0.8 * self.mean_s + 0.2 * duration_s
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.in_flight = max(0, self.in_flight - 1)


async def wait_disconnect(receive: Any) -> None:
    """Returns when the client has gone (the request body must have been read already)."""
    while True:
        msg = await receive()
        if msg.get("type") == "http.disconnect":
            return
