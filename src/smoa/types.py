"""Small immutable data types shared by backends, the engine and the trace."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .redaction import install_log_redaction

if TYPE_CHECKING:
    from .trace import Trace

# Secrets are masked in every log record of the process (see smoa.redaction), whoever logs
# them: the SDK, httpx, uvicorn's access log.
install_log_redaction()

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}

VALID_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Settings:
    """Sampling settings. Every field is optional; `overlay` lets a later layer win."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None  # -2..2, as OpenAI's: both backends apply them
    frequency_penalty: float | None = None

    def overlay(self, other: Settings | None) -> Settings:
        if other is None:
            return self
        changes = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name) is not None}
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Request:
    """One chat completion request, as a backend sees it."""

    messages: tuple[Message, ...]
    model: str
    settings: Settings = field(default_factory=Settings)
    json_schema: dict[str, Any] | None = None  # ask for structured output when the backend can
    # OpenAI tool definitions and tool_choice for a tool decision (smoa.server.tools): a backend
    # with native tool calling may send them instead of json_schema and must answer with the
    # decision JSON that json_schema describes; other backends ignore them
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None
    # False when settings.seed is the engine's own random per-proposer seed, not one the
    # user chose: such calls are not reproducible on purpose and are never cached.
    seed_given: bool = True


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    finish_reason: str | None = None
    cached: bool = False
    # True when the endpoint reported no token counts and they were estimated (see
    # smoa.backends.upstream.stream_usage); the trace and the cost say so
    estimated: bool = False
    # prompt tokens the backend evaluated for this call (None: not known); fewer than
    # prompt_tokens where it reused the KV state of an earlier prompt's prefix
    prompt_evaluated: int | None = None


@dataclass
class StreamEvent:
    """A streamed piece of text; the last event carries the whole completion."""

    delta: str = ""
    completion: Completion | None = None


class SmoaError(Exception):
    """An error with a message meant for the user: one line, says what to do.

    The message is redacted when the error is made: no API key reaches a user, a log or a trace.

    Every error says by its type what a server answers for it: `http_status` and `error_code`
    (the OpenAI error shape's `code`; smoa.server.errors reads both, never the message).
    `trace` is the trace of the query that failed, set by `Engine.run` (None when the error
    did not come out of a query, e.g. a bad config found before any call).
    """

    http_status: int = 400  # a request the caller can fix
    error_code: str | None = None
    trace: Trace | None = None

    def __init__(self, *args: Any) -> None:
        from .redaction import redact

        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(SmoaError):
    """The configuration cannot run this: for a server, its own fault (500), not the client's."""

    http_status = 500
    error_code = "config_error"


class BackendError(SmoaError):
    """A call failed. `status_code` (HTTP), `retry_after` (seconds the endpoint asked us to
    wait) and `retryable` (None: decide from the status) guide `smoa.wrappers.RetryingBackend`;
    `timeout` says the failure was a time-out (the server answers 504 for those, 502 else)."""

    http_status = 502
    error_code = "upstream_error"

    def __init__(
        self,
        *args: Any,
        status_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(*args)
        self.timeout = timeout
        if timeout:
            self.http_status, self.error_code = 504, "upstream_timeout"
        self.status_code = status_code
        self.retry_after = retry_after
        self.retryable = retryable


class InputError(BackendError):
    """The input cannot be used as given (too long, empty, not text): retrying will not help."""

    http_status = 400
    error_code = "input_rejected"

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("retryable", False)
        super().__init__(*args, **kw)


class ContextLengthError(InputError):
    """The prompt does not fit the model's context window."""

    error_code = "context_length_exceeded"


def normalize_messages(query: str | list[Message] | tuple[Message, ...]) -> tuple[Message, ...]:
    """Turn a prompt or a chat history into validated messages (one clear error if bad)."""
    if isinstance(query, bytes | bytearray):
        try:
            query = bytes(query).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"the prompt is not valid UTF-8 (byte 0x{query[e.start]:02x} at offset {e.start}): convert it to UTF-8") from None
    if isinstance(query, str):
        if not query.strip():
            raise InputError("the prompt is empty: give a question or task to answer")
        _check_text(query, "the prompt")
        return ({"role": "user", "content": query},)
    if not isinstance(query, list | tuple):
        raise InputError(f"the query is a {type(query).__name__}: give a string or a list of messages")
    msgs: list[Message] = []
    for i, m in enumerate(query):
        if not isinstance(m, dict):
            raise InputError(f"message {i} is not an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in VALID_ROLES:
            raise InputError(f"message {i} has role {role!r}: use one of {', '.join(VALID_ROLES)}")
        if not isinstance(content, str):
            raise InputError(f"message {i} has no text 'content'")
        if role == "user" and not content.strip():
            raise InputError(f"message {i} (user) is empty: remove it or give it text")
        _check_text(content, f"message {i}")
        msgs.append({"role": role, "content": content})
    if not msgs or not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        raise InputError("the conversation has no non-empty user message: give a question to answer")
    if msgs[-1]["role"] != "user":
        raise InputError(f"the last message must come from the user, not the {msgs[-1]['role']}")
    return tuple(msgs)


def _check_text(text: str, what: str) -> None:
    """Text that cannot be sent as UTF-8 (lone surrogates from undecodable bytes) or that
    carries NUL characters is refused with the offset of the first bad character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} is not valid UTF-8 text (undecodable character at offset {e.start}): convert it to UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise InputError(f"{what} contains a NUL character at offset {nul}: remove it")
