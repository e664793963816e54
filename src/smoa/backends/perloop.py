"""One HTTP client per event loop, closed when its loop ends.

A client's connections belong to the event loop that opened them, and a backend outlives
loops (successive `asyncio.run` calls, a server's loop, worker threads). So each transport
(aiohttp's session, the openai SDK's client) keeps one client per loop. An async generator
registered with that loop closes the client when the loop ends (`asyncio.run` closes a
loop's async generators before it closes the loop), or `aclose()` does: no connection is
left for the garbage collector to find (and warn about) after its loop is gone.

Our own code (a few lines): neither aiohttp nor httpx ties a client's life to its loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


async def _closer(item: T, close: Callable[[T], Awaitable[None]]) -> AsyncGenerator[None, None]:
    """Suspended for the client's life; closing it closes the client on its own loop."""
    try:
        yield
    finally:
        await close(item)


class PerLoop(Generic[T]):
    """`await per_loop.get()`: this loop's client, made by `make` on first use."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]],
                 closed: Callable[[T], bool]) -> None:
        self._make, self._close, self._closed = make, close, closed
        self._items: dict[asyncio.AbstractEventLoop, tuple[T, AsyncGenerator[None, None]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._items.get(loop)
        if entry is not None and not self._closed(entry[0]):
            return entry[0]
        for lp in [lp for lp in list(self._items) if lp.is_closed()]:  # list(): other threads' loops
            self._items.pop(lp, None)  # their clients were closed with them
        item = self._make()
        closer = _closer(item, self._close)
        self._items[loop] = (item, closer)
        await closer.__anext__()  # registers it with the loop: closed when the loop ends
        return item

    async def aclose(self) -> None:
        """Close this loop's client (its idle connections); a later `get` makes a new one."""
        entry = self._items.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()  # its `finally` closes the client
