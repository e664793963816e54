"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, Ollama, llama.cpp server, ...)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ..redaction import install_log_redaction, register_secret
from ..types import BackendError, Completion, ConfigError, InputError, Request, StreamEvent
from .base import Backend

# Characters per token used to estimate a prompt's length without the model's tokenizer.
# Deliberately generous (English averages about 4): only prompts that are surely too long
# are refused here; the endpoint still has the last word.
CHARS_PER_TOKEN = 4.0


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key_env: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 2,
        structured: str = "json_schema",
        max_concurrency: int | None = None,
        name: str = "openai",
        context_window: int | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ConfigError(
                    f"backend {name!r}: environment variable {api_key_env} is not set: export it or change api_key_env"
                )
        register_secret(api_key)
        install_log_redaction()
        # Local servers need no key; the SDK insists on one, so give it a placeholder.
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries
        )
        self.base_url = base_url
        self.name = name
        if structured not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"backend {name!r}: structured must be json_schema, json_object or none")
        self.structured = structured
        self.max_concurrency = max_concurrency
        self.context_window = context_window

    def check_context(self, request: Request) -> None:
        """Refuse a prompt that cannot fit `context_window` (when one is configured)."""
        if not self.context_window:
            return
        chars = sum(len(m["content"]) for m in request.messages)
        est = int(chars / CHARS_PER_TOKEN)
        if est >= self.context_window:
            raise InputError(
                f"{self.describe()}: the prompt has about {est} tokens ({chars} characters), over the context window "
                f"of {self.context_window} tokens (backends.{self.name}.context_window): shorten it, lower n/k, "
                "or raise context_window"
            )

    def describe(self) -> str:
        return f"openai:{self.base_url or 'api.openai.com'}"

    def _kwargs(self, request: Request) -> dict[str, Any]:
        s = request.settings
        kw: dict[str, Any] = {"model": request.model, "messages": list(request.messages)}
        if s.temperature is not None:
            kw["temperature"] = s.temperature
        if s.max_tokens is not None:
            kw["max_tokens"] = s.max_tokens
        if s.top_p is not None:
            kw["top_p"] = s.top_p
        if s.seed is not None:
            kw["seed"] = s.seed
        if s.stop:
            kw["stop"] = list(s.stop)
        if request.json_schema is not None and self.structured == "json_schema":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": request.json_schema},
            }
        elif request.json_schema is not None and self.structured == "json_object":
            kw["response_format"] = {"type": "json_object"}
        return kw

    async def complete(self, request: Request) -> Completion:
        import openai

        self.check_context(request)
        kw = self._kwargs(request)
        try:
            resp = await self._client.chat.completions.create(**kw)
        except openai.APIStatusError as e:
            if "response_format" in kw and _rejects_structured(e):
                # The endpoint does not take this kind of structured output: step down
                # (json_schema -> json_object -> none) for good, and ask again.
                while "response_format" in kw:
                    self.structured = "json_object" if self.structured == "json_schema" else "none"
                    kw = self._kwargs(request)
                    try:
                        resp = await self._client.chat.completions.create(**kw)
                        break
                    except openai.APIStatusError as e2:
                        if "response_format" in kw and _rejects_structured(e2):
                            continue
                        raise _wrap(e2, self) from e2
                    except openai.APIError as e2:
                        raise _wrap(e2, self) from e2
            else:
                raise _wrap(e, self) from e
        except openai.APIError as e:
            raise _wrap(e, self) from e
        except ValueError as e:  # the body was not JSON (json.JSONDecodeError)
            raise _malformed(e, self) from e
        if not getattr(resp, "choices", None) or getattr(resp.choices[0], "message", None) is None:
            raise BackendError(f"{self.describe()}: malformed response: no choices with a message", retryable=True)
        choice = resp.choices[0]
        usage = resp.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=resp.model or request.model,
            finish_reason=choice.finish_reason,
        )

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        import openai

        self.check_context(request)
        kw = self._kwargs(request)
        kw.pop("response_format", None)
        kw["stream"] = True
        kw["stream_options"] = {"include_usage": True}
        parts: list[str] = []
        usage = None
        finish = None
        model = request.model
        try:
            stream = await self._client.chat.completions.create(**kw)
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.model:
                    model = chunk.model
                for ch in chunk.choices:
                    if ch.delta and ch.delta.content:
                        parts.append(ch.delta.content)
                        yield StreamEvent(delta=ch.delta.content)
                    if ch.finish_reason:
                        finish = ch.finish_reason
        except openai.APIError as e:
            raise _wrap(e, self) from e
        except ValueError as e:  # a chunk that is not JSON
            raise _malformed(e, self) from e
        if finish is None:
            # the connection ended before the last chunk: the answer may be cut short
            raise BackendError(f"{self.describe()}: the stream ended early (no finish_reason): the answer is incomplete", retryable=True)
        yield StreamEvent(
            completion=Completion(
                text="".join(parts),
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                model=model,
                finish_reason=finish,
            )
        )

    async def aclose(self) -> None:
        await self._client.close()


def _wrap(e: Exception, backend: OpenAIBackend) -> BackendError:
    """One clear, redacted line; with the HTTP status and Retry-After for the retry wrapper."""
    import openai

    where = backend.describe()
    retryable: bool | None = None
    if isinstance(e, openai.APITimeoutError):
        msg = f"{where}: no reply in time (APITimeoutError): the endpoint is slow or hanging"
        retryable = True
    elif isinstance(e, openai.APIConnectionError):
        msg = f"{where}: cannot reach the endpoint ({type(e).__name__}): check base_url and that the server is running"
        retryable = True
    elif isinstance(e, openai.AuthenticationError):
        msg = f"{where}: the endpoint refused the API key (401): check the key variable"
    elif isinstance(e, openai.NotFoundError):
        msg = f"{where}: not found (404): check the model name and base_url"
    elif isinstance(e, openai.APIStatusError):
        msg = f"{where}: the endpoint answered {e.status_code}: {_first_line(getattr(e, 'message', str(e)))}"
    elif isinstance(e, openai.APIResponseValidationError):
        msg = f"{where}: malformed response: {_first_line(str(e))}"
        retryable = True
    else:
        msg = f"{where}: {type(e).__name__}: {_first_line(str(e))}"
    status = getattr(e, "status_code", None)
    err_cls = InputError if isinstance(e, openai.BadRequestError) and _is_context_error(e) else BackendError
    return err_cls(
        msg, status_code=status, retry_after=_retry_after(e), retryable=retryable,
        timeout=isinstance(e, openai.APITimeoutError),
    )


def _malformed(e: Exception, backend: OpenAIBackend) -> BackendError:
    return BackendError(f"{backend.describe()}: malformed response ({type(e).__name__}): {_first_line(str(e))}", retryable=True)


def _rejects_structured(e: Exception) -> bool:
    """Whether an error says the endpoint cannot take the response_format we sent.

    400/422 are plain refusals; some servers (llama-cpp-python's) answer 500 with a
    request-validation message instead."""
    status = getattr(e, "status_code", None)
    if _is_context_error(e):
        return False
    if status in (400, 422):
        return True
    text = str(getattr(e, "message", "") or e).lower()
    return status == 500 and any(w in text for w in ("validation", "response_format", "schema", "grammar"))


def _is_context_error(e: Exception) -> bool:
    text = str(getattr(e, "message", "") or e).lower()
    return "context" in text and ("length" in text or "window" in text or "too long" in text)


def _retry_after(e: Exception) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if the endpoint sent one."""
    resp = getattr(e, "response", None)
    headers = getattr(resp, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            import time
            from email.utils import parsedate_to_datetime

            return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _first_line(s: str) -> str:
    return (s.strip().splitlines() or [""])[0][:300]
