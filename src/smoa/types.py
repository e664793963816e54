"""Small immutable data types shared by backends, the engine and the trace."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

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


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    finish_reason: str | None = None
    cached: bool = False


@dataclass
class StreamEvent:
    """A streamed piece of text; the last event carries the whole completion."""

    delta: str = ""
    completion: Completion | None = None


class SmoaError(Exception):
    """An error with a message meant for the user: one line, says what to do."""


class ConfigError(SmoaError):
    pass


class BackendError(SmoaError):
    pass


def normalize_messages(query: str | list[Message] | tuple[Message, ...]) -> tuple[Message, ...]:
    """Turn a prompt or a chat history into validated messages (one clear error if bad)."""
    if isinstance(query, str):
        if not query.strip():
            raise SmoaError("the prompt is empty: give a question or task to answer")
        return ({"role": "user", "content": query},)
    msgs: list[Message] = []
    for i, m in enumerate(query):
        if not isinstance(m, dict):
            raise SmoaError(f"message {i} is not an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in VALID_ROLES:
            raise SmoaError(f"message {i} has role {role!r}: use one of {', '.join(VALID_ROLES)}")
        if not isinstance(content, str):
            raise SmoaError(f"message {i} has no text 'content'")
        msgs.append({"role": role, "content": content})
    if not msgs or not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        raise SmoaError("the conversation has no non-empty user message: give a question to answer")
    if msgs[-1]["role"] != "user":
        raise SmoaError("the last message must come from the user")
    return tuple(msgs)
