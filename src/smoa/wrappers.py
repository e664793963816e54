"""Reliability as wrappers around any backend: retry with backoff, per-call timeout, fallback.

    backend = RetryingBackend(OpenAIBackend(...), RetryPolicy(retries=3, timeout_s=30))
    backend = FallbackBackend(backend, other_backend, "other-model")

A wrapper is itself a `Backend`, so they stack, and the engine does not know they are there.
What they did for one call (attempts, the errors that were retried, a fallback used) goes
to the `CallLog` that the engine opens per call (`call_log()`), and from there into the
trace's call record.

What is retried: HTTP 429, 408, 409 and 5xx, connection errors, time-outs, malformed
responses; not 4xx mistakes (bad key, unknown model, prompt too long), and not a stream
that already sent text (the text went out; a retry would repeat it). The wait before
attempt `i` is `min(backoff_max_s, backoff_s * 2**i)` with full jitter, or the endpoint's
`Retry-After` when it gives one (capped at `retry_after_max_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from .backends.base import Backend
from .types import BackendError, Completion, InputError, Request, Settings, SmoaError, StreamEvent


@dataclass
class CallLog:
    """What the wrappers did during one engine call."""

    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # every failed attempt, in order
    fallback: str | None = None  # "backend:model" that answered instead of the agent's own


_current: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar("smoa_call_log", default=None)


def open_call_log() -> tuple[CallLog, contextvars.Token[CallLog | None]]:
    """Start recording for one call (in the current task); `close_call_log(token)` ends it."""
    log = CallLog()
    return log, _current.set(log)


def close_call_log(token: contextvars.Token[CallLog | None]) -> None:
    _current.reset(token)


def call_log() -> CallLog | None:
    return _current.get()


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2  # further attempts after the first
    timeout_s: float | None = None  # per attempt (None: no limit here)
    backoff_s: float = 0.5
    backoff_max_s: float = 20.0
    jitter: bool = True
    honour_retry_after: bool = True
    retry_after_max_s: float = 60.0

    def delay(self, attempt: int, err: BaseException | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        ra = getattr(err, "retry_after", None)
        if self.honour_retry_after and isinstance(ra, int | float) and ra >= 0:
            return min(float(ra), self.retry_after_max_s)
        cap = min(self.backoff_max_s, self.backoff_s * (2**attempt))
        return rng.uniform(0, cap) if self.jitter else cap


def is_retryable(err: BaseException) -> bool:
    if isinstance(err, InputError):
        return False
    if isinstance(err, TimeoutError):
        return True
    if not isinstance(err, BackendError):
        return False
    if err.retryable is not None:
        return err.retryable
    code = err.status_code
    if code is None:
        return True  # connection errors, malformed replies: worth another try
    return code in (408, 409, 429) or code >= 500


class _Wrapper(Backend):
    """Delegates everything to `inner`; shares its concurrency limit."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.name = getattr(inner, "name", inner.kind)
        _share_limit(self, inner)

    @property
    def max_concurrency(self) -> int | None:
        return self.inner.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int | None) -> None:
        self.inner.max_concurrency = value

    def describe(self) -> str:
        return self.inner.describe()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        # anything else a backend exposes (path, base_url, structured, ...) reads through
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _share_limit(wrapper: Backend, inner: Backend) -> None:
    """The engine keys per-endpoint limits by backend object: make the wrapper count as its
    inner backend, so that wrappers with different policies share one endpoint limit."""
    try:
        from . import limits
    except ImportError:  # pragma: no cover - older engines keep no shared limiters
        return
    lim = limits.backend_limiter(inner)
    if lim is not None:
        limits._backend_limiters[wrapper] = lim


class RetryingBackend(_Wrapper):
    """Retries failed calls with exponential backoff and jitter; bounds each attempt in time."""

    def __init__(self, inner: Backend, policy: RetryPolicy | None = None, *, seed: int | None = None) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)
        self.sleep = asyncio.sleep  # tests replace it to observe the waits

    def _timeout_error(self) -> BackendError:
        return BackendError(
            f"{self.describe()}: no reply within {self.policy.timeout_s:g} s (timeout_s): the endpoint is slow or hanging",
            retryable=True,
            timeout=True,
        )

    async def _attempt(self, request: Request) -> Completion:
        if self.policy.timeout_s is None:
            return await self.inner.complete(request)
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self.inner.complete(request)
        except TimeoutError:
            raise self._timeout_error() from None

    async def complete(self, request: Request) -> Completion:
        log = call_log()
        last: BaseException | None = None
        for attempt in range(self.policy.retries + 1):
            if attempt:
                await self.sleep(self.policy.delay(attempt - 1, last, self._rng))
            if log is not None:
                log.attempts += 1
            try:
                return await self._attempt(request)
            except (BackendError, TimeoutError) as e:
                last = e
                if log is not None:
                    log.errors.append(_one_line(e))
                if not is_retryable(e):
                    raise
        assert last is not None
        raise _exhausted(last, self.policy.retries + 1)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        log = call_log()
        last: BaseException | None = None
        for attempt in range(self.policy.retries + 1):
            if attempt:
                await self.sleep(self.policy.delay(attempt - 1, last, self._rng))
            if log is not None:
                log.attempts += 1
            sent = False
            try:
                agen = self.inner.stream(request)
                try:
                    while True:
                        try:
                            if self.policy.timeout_s is None:
                                ev = await agen.__anext__()
                            else:
                                # the time-out bounds the wait for each piece, not the whole answer
                                async with asyncio.timeout(self.policy.timeout_s):
                                    ev = await agen.__anext__()
                        except StopAsyncIteration:
                            return
                        except TimeoutError:
                            raise self._timeout_error() from None
                        if ev.delta:
                            sent = True
                        yield ev
                finally:
                    aclose = getattr(agen, "aclose", None)  # an async generator's; a plain iterator has none
                    if aclose is not None:
                        await aclose()
            except (BackendError, TimeoutError) as e:
                last = e
                if log is not None:
                    log.errors.append(_one_line(e))
                if sent:
                    raise BackendError(f"{_one_line(e)} (after part of the answer was streamed: not retried)") from e
                if not is_retryable(e):
                    raise
        assert last is not None
        raise _exhausted(last, self.policy.retries + 1)


def _exhausted(last: BaseException, attempts: int) -> BackendError:
    msg = _one_line(last)
    if attempts > 1:
        msg = f"{msg} (gave up after {attempts} attempts)"
    err = BackendError(
        msg, status_code=getattr(last, "status_code", None), retryable=False,
        timeout=getattr(last, "timeout", False) or isinstance(last, TimeoutError),
    )
    err.__cause__ = last
    return err


def _one_line(e: BaseException) -> str:
    s = str(e) if isinstance(e, SmoaError) else f"{type(e).__name__}: {e}"
    return (s.strip().splitlines() or [type(e).__name__])[0]


class FallbackBackend(_Wrapper):
    """When `inner` fails (after its own retries), ask `fallback` with `fallback_model`."""

    def __init__(
        self,
        inner: Backend,
        fallback: Backend,
        fallback_model: str,
        fallback_settings: Settings | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(inner)
        self.fallback = fallback
        self.fallback_model = fallback_model
        self.fallback_settings = fallback_settings
        self.label = label or f"{fallback.describe()}|{fallback_model}"

    def _request(self, request: Request) -> Request:
        return replace(request, model=self.fallback_model, settings=request.settings.overlay(self.fallback_settings))

    def _note(self, err: BaseException) -> None:
        log = call_log()
        if log is not None:
            log.fallback = self.label
            if not log.errors or log.errors[-1] != _one_line(err):
                log.errors.append(_one_line(err))

    def _fallback_limit(self):
        """The fallback endpoint's own concurrency limit (the engine holds only the primary's)."""
        try:
            from .limits import backend_limiter
        except ImportError:  # pragma: no cover
            return contextlib.nullcontext()
        lim = backend_limiter(self.fallback)
        if lim is None or lim is backend_limiter(self):
            return contextlib.nullcontext()
        return lim

    async def complete(self, request: Request) -> Completion:
        try:
            return await self.inner.complete(request)
        except BackendError as e:
            if isinstance(e, InputError):
                raise
            self._note(e)
            try:
                async with self._fallback_limit():
                    return await self.fallback.complete(self._request(request))
            except BackendError as e2:
                raise BackendError(f"{_one_line(e)}; fallback {self.label} failed too: {_one_line(e2)}") from e2

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        sent = False
        try:
            async for ev in self.inner.stream(request):
                sent = sent or bool(ev.delta)
                yield ev
            return
        except BackendError as e:
            if sent or isinstance(e, InputError):
                raise
            self._note(e)
            err = e
        try:
            async with self._fallback_limit():
                async for ev in self.fallback.stream(self._request(request)):
                    yield ev
        except BackendError as e2:
            raise BackendError(f"{_one_line(err)}; fallback {self.label} failed too: {_one_line(e2)}") from e2
