"""The backend interface: one small async protocol every model provider implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from ..types import Completion, Request, StreamEvent


class Backend(ABC):
    """Turns a `Request` into a `Completion`.

    Implementations: `OpenAIBackend` (any OpenAI-compatible endpoint), `LocalBackend`
    (embedded llama.cpp), `smoa.testing.ScriptedBackend` (tests). A backend that can
    stream overrides `stream`; the default yields the whole completion as one piece.
    """

    #: short kind name, e.g. "openai", "local", "scripted"
    kind: str = "backend"
    #: how many requests this backend may have in flight at once (None: no limit)
    max_concurrency: int | None = None

    @abstractmethod
    async def complete(self, request: Request) -> Completion: ...

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(request)
        yield StreamEvent(delta=completion.text)
        yield StreamEvent(completion=completion)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> str:
        return self.kind
