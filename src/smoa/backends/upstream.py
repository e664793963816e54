"""Values from an OpenAI-compatible endpoint, checked where they enter smoa.

Everything an endpoint sends is untrusted: a token count of ``10**30`` once crashed the
results store (and every rerun with it), a negative one gave a negative cost, ``"lots"`` a
raw ValueError, ``content: null`` an empty answer that looked fine, a redirect a confusing
"body is not JSON". Here each of these becomes one :class:`BackendError` with a clear
message, for that call only: the engine records it in the trace, the eval runner in the
store, and the run goes on. The HTTP client code (``httpclient``, the SDK transport) only
moves bytes; the OpenAI backend calls these functions on what it got back. None of these
errors is retried (retrying repeats the spend and, for a broken server, the error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..types import BackendError

__all__ = ["MAX_TOKENS_PER_CALL", "usage_counts", "stream_usage", "estimate_tokens", "message_text",
           "check_stream_text", "model_name", "redirect_error"]

# Characters per token for an estimate when an endpoint reports no count (English text
# averages about 4 with the usual BPE vocabularies).
CHARS_PER_TOKEN_ESTIMATE = 4.0

# A sane ceiling for the tokens of one call: far above any context window (millions), far
# below what breaks a 64-bit integer column or float arithmetic on costs.
MAX_TOKENS_PER_CALL = 2**31 - 1


def _token_count(usage: Mapping[str, Any], key: str, where: str) -> int:
    v = usage.get(key)
    if v is None:
        return 0  # not reported (some servers send no usage): counted as 0, as before
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # 12.0 is a count, written as a float by some servers
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS_PER_CALL:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise BackendError(
            f"{where}: the endpoint reported an impossible token count usage.{key}={shown} "
            f"(a whole number from 0 to {MAX_TOKENS_PER_CALL} was expected): the call is not counted; "
            "check the server",
            retryable=False,
        )
    return v


def usage_counts(usage: Any, where: str) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a response's ``usage``; missing counts are 0.
    Raises BackendError for a usage that is not an object or a count that is not a
    whole number in [0, MAX_TOKENS_PER_CALL]."""
    if usage is None:
        return 0, 0
    if not isinstance(usage, Mapping):
        raise BackendError(f"{where}: the endpoint's usage is a {type(usage).__name__}, not an object: "
                           "check the server", retryable=False)
    return _token_count(usage, "prompt_tokens", where), _token_count(usage, "completion_tokens", where)


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is, without the model's tokenizer: characters / 4,
    rounded up (at least 1 for any non-empty text)."""
    return -(-len(text) // int(CHARS_PER_TOKEN_ESTIMATE)) if text else 0


def stream_usage(usage: Any, prompt: str, text: str, where: str) -> tuple[int, int, bool]:
    """(prompt_tokens, completion_tokens, estimated) of a stream. Many servers send no usage
    in streams (or only one of the counts): a count not reported is estimated from the
    prompt's or the answer's text, and `estimated` says so. Reported counts are checked like
    `usage_counts`'s."""
    p, c = usage_counts(usage, where)
    have = usage if isinstance(usage, Mapping) else {}
    estimated = False
    if have.get("prompt_tokens") is None:
        p, estimated = estimate_tokens(prompt), True
    if have.get("completion_tokens") is None:
        c, estimated = estimate_tokens(text), True
    return p, c, estimated


def message_text(message: Mapping[str, Any], where: str, finish_reason: Any = None) -> str:
    """The text of a chat completion's message. Raises BackendError when there is none
    (``content`` null or missing, or not text)."""
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(content, str):
        return content
    if content is None:
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            why = f"the model refused: {refusal.strip().splitlines()[0][:200]}"
        elif message.get("tool_calls"):
            why = "the model answered with tool calls, which smoa does not request"
        elif finish_reason == "length":
            why = "max_tokens was reached before any text (a reasoning model may need more)"
        else:
            why = "check the server and the model"
        raise BackendError(f"{where}: the reply has no text (message.content is null): {why}", retryable=False)
    raise BackendError(f"{where}: the reply's message.content is a {type(content).__name__}, not text: "
                       "check the server", retryable=False)


def check_stream_text(saw_text: bool, finish_reason: Any, where: str) -> None:
    """A finished stream must have carried text (``""`` counts; every ``delta.content``
    null or missing does not). Raises BackendError."""
    if not saw_text:
        raise BackendError(f"{where}: the stream carried no text (every delta.content was null or missing; "
                           f"finish_reason {finish_reason!r}): check the server and the model", retryable=False)


def model_name(value: Any, default: str) -> str:
    """The model an endpoint says answered: a non-empty string of sane length, else ``default``."""
    return value if isinstance(value, str) and 0 < len(value) <= 256 else default


def redirect_error(status: int, headers: Mapping[str, str] | None, where: str) -> BackendError:
    """The error for a 3xx answer: smoa does not follow redirects (a POST must not silently
    turn into a GET elsewhere, and a key must not follow it to another host)."""
    loc = (headers or {}).get("location") or ""
    shown = ""
    if loc:
        u = urlsplit(loc)  # no query or credentials in the message: they may carry tokens
        host = u.hostname or ""
        if u.port:
            host = f"{host}:{u.port}"
        shown = f" to {u.scheme}://{host}{u.path}" if u.scheme else f" to {u.path}"
    return BackendError(
        f"{where}: the endpoint redirected ({status}){shown}: smoa does not follow redirects; "
        "set base_url to the address it points to",
        status_code=status,
    )
