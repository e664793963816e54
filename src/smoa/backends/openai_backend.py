"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, Ollama, llama.cpp server, ...).

Two HTTP clients, same behaviour (errors, time-outs, structured-output step-down):

- `aiohttp` (the default; `smoa.backends.aiohttp_transport`): sends and reads JSON and
  server-sent events through aiohttp, about a tenth of the openai SDK's CPU per call,
  which is what lets one process keep a fast local server busy (BENCHMARKS.md,
  throughput); proxies from HTTP(S)_PROXY / NO_PROXY, TLS, keep-alive, compression;
- `openai-sdk`: the official `openai` package (httpx), for whatever the SDK adds.

`builtin` and `auto`, the names of the former home-made client and of its default, are
deprecated aliases of `aiohttp` (a warning says so); they will be refused in a later release.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from .. import __version__
from ..redaction import clip, install_log_redaction, register_secret, register_url
from ..types import BackendError, Completion, ConfigError, ContextLengthError, Request, StreamEvent
from . import upstream
from .aiohttp_transport import (
    AiohttpTransport,
    ConnectFailure,
    HTTPFailure,
    InvalidHeader,
    InvalidURL,
    ProtocolFailure,
    StatusFailure,
    TimeoutFailure,
    UnsupportedProxy,
)
from .base import Backend
from .perloop import PerLoop

DEFAULT_BASE_URL = "https://api.openai.com/v1"
HTTP_CLIENTS = ("aiohttp", "openai-sdk")
# former names, accepted with a warning: both meant the home-made client aiohttp replaced
DEPRECATED_HTTP_CLIENTS = ("builtin", "auto")

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
        http_client: str = "aiohttp",
    ) -> None:
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ConfigError(
                    f"backend {name!r}: environment variable {api_key_env} is not set: export it or change api_key_env"
                )
        register_secret(api_key)
        register_url(base_url)
        install_log_redaction()
        http_client = normalize_http_client(http_client, f"backend {name!r}")
        self.http_client = http_client
        self._client: Any = None  # the AsyncOpenAI client, when http_client is openai-sdk
        self._http: AiohttpTransport | _SDKTransport
        if http_client == "aiohttp":
            headers = {"User-Agent": f"smoa/{__version__}"}
            url, basic = _split_credentials(base_url or DEFAULT_BASE_URL)
            if basic and api_key:
                raise ConfigError(f"backend {name!r}: base_url carries a user and password and an API key is set too: "
                                  "use one of them (the password in base_url is sent as HTTP Basic auth)")
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            elif basic:
                headers["Authorization"] = basic
            try:
                self._http = AiohttpTransport(url, headers=headers, timeout_s=timeout_s,
                                              max_connections=max_concurrency)
            except InvalidURL as e:
                raise ConfigError(f"backend {name!r}: base_url {base_url!r} is not an http(s) URL: e.g. http://127.0.0.1:8000/v1") from e
            except InvalidHeader as e:
                raise ConfigError(f"backend {name!r}: the API key is not usable in an HTTP header ({e}): check the key variable") from e
            except UnsupportedProxy as e:
                raise ConfigError(f"backend {name!r}: {e}: set an http:// proxy, exempt the host with NO_PROXY, "
                                  "or use http_client = \"openai-sdk\"") from e
        else:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            # Local servers need no key; the SDK insists on one, so give it a placeholder.
            # Redirects are not followed (a POST would come back as a GET elsewhere): a 3xx
            # is reported as such (upstream.redirect_error), as with the builtin client.
            def http() -> Any:
                return DefaultAsyncHttpxClient(follow_redirects=False, timeout=timeout_s)

            self._client = AsyncOpenAI(
                base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries,
                http_client=http(),
            )
            self._http = _SDKTransport(self._client, http)
        self.base_url = base_url
        self.name = name
        if structured not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"backend {name!r}: structured must be json_schema, json_object or none")
        self.structured = structured
        # a tool decision is asked for with the endpoint's own tool calling until it refuses
        # tools once; then, for good, with the decision's JSON schema (smoa.server.tools)
        self.native_tools = True
        self.max_concurrency = max_concurrency
        self.context_window = context_window

    def check_context(self, request: Request) -> None:
        """Refuse a prompt that cannot fit `context_window` (when one is configured)."""
        if not self.context_window:
            return
        chars = sum(len(m["content"]) for m in request.messages)
        est = int(chars / CHARS_PER_TOKEN)
        if est >= self.context_window:
            raise ContextLengthError(
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
        if s.presence_penalty is not None:
            kw["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty is not None:
            kw["frequency_penalty"] = s.frequency_penalty
        if request.tools and self.native_tools:
            kw["tools"] = list(request.tools)
            if request.tool_choice is not None:
                kw["tool_choice"] = request.tool_choice
            return kw
        if request.json_schema is not None and self.structured == "json_schema":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": request.json_schema},
            }
        elif request.json_schema is not None and self.structured == "json_object":
            kw["response_format"] = {"type": "json_object"}
        return kw

    async def complete(self, request: Request) -> Completion:
        self.check_context(request)
        kw = self._kwargs(request)
        while True:
            try:
                d = await self._http.request_json("POST", "/chat/completions", kw)
                break
            except StatusFailure as e:
                if "tools" in kw and _rejects_structured(e.status, e.message):
                    self.native_tools = False  # no native tool calling here: the decision's JSON schema
                    kw = self._kwargs(request)
                    continue
                if "response_format" in kw and _rejects_structured(e.status, e.message):
                    # The endpoint does not take this kind of structured output: step down
                    # (json_schema -> json_object -> none) for good, and ask again.
                    self.structured = "json_object" if self.structured == "json_schema" else "none"
                    kw = self._kwargs(request)
                    continue
                raise _status_error(e, self) from e
            except HTTPFailure as e:
                raise _failure(e, self) from e
        return _completion(d, request, self)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        self.check_context(request)
        kw = self._stream_kwargs(request)
        parts: list[str] = []
        usage: Any = None
        finish = None
        saw_text = False
        model = request.model
        try:
            async for chunk in self._http.stream_events("/chat/completions", kw):
                if not isinstance(chunk, dict):
                    raise BackendError(f"{self.describe()}: malformed response: a stream event is not a JSON object", retryable=True)
                if chunk.get("error"):
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else err
                    raise BackendError(f"{self.describe()}: the endpoint reported an error mid-stream: {_first_line(str(msg))}", retryable=True)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                model = upstream.model_name(chunk.get("model"), model)
                for ch in chunk.get("choices") or ():
                    delta = ch.get("delta") or {}
                    content = delta.get("content")
                    if isinstance(content, str):
                        saw_text = True
                    if content:
                        parts.append(content)
                        yield StreamEvent(delta=content)
                    if ch.get("finish_reason"):
                        finish = ch["finish_reason"]
        except StatusFailure as e:
            raise _status_error(e, self) from e
        except HTTPFailure as e:
            raise _failure(e, self) from e
        if finish is None:
            # the connection ended before the last chunk: the answer may be cut short
            raise BackendError(f"{self.describe()}: the stream ended early (no finish_reason): the answer is incomplete", retryable=True)
        upstream.check_stream_text(saw_text, finish, self.describe())
        text = "".join(parts)
        prompt = "\n".join(m["content"] for m in request.messages)
        prompt_tokens, completion_tokens, estimated = upstream.stream_usage(usage, prompt, text, self.describe())
        yield StreamEvent(
            completion=Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                model=model,
                finish_reason=finish,
                estimated=estimated,
            )
        )

    def _stream_kwargs(self, request: Request) -> dict[str, Any]:
        from dataclasses import replace

        kw = self._kwargs(replace(request, tools=None, tool_choice=None))  # streams carry text only
        kw.pop("response_format", None)
        kw["stream"] = True
        kw["stream_options"] = {"include_usage": True}
        return kw

    async def aclose(self) -> None:
        await self._http.aclose()


class _SDKTransport:
    """The openai SDK behind AiohttpTransport's calls: JSON in, dicts out, its errors turned into
    the same HTTPFailures, so both clients share one code path in OpenAIBackend.

    `client` holds the options and opens no connection; each event loop gets a copy of it with
    its own HTTP client, closed with that loop (smoa.backends.perloop): one client for all
    loops failed on the second `asyncio.run` ("Event loop is closed") and left its connections
    on finished loops unclosed."""

    def __init__(self, client: Any, http: Callable[[], Any]) -> None:
        self.client = client
        self._clients: PerLoop[Any] = PerLoop(lambda: client.copy(http_client=http()),
                                              lambda c: c.close(), lambda c: c.is_closed())

    async def request_json(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        import openai

        try:
            client = await self._clients.get()
            resp = await client.chat.completions.create(**payload)
        except (openai.APIError, ValueError) as e:  # ValueError: a body that is not JSON
            raise _sdk_failure(e) from e
        return resp.model_dump(warnings=False)  # odd values are judged by upstream.py, not warned about

    async def stream_events(self, path: str, payload: dict[str, Any]) -> AsyncIterator[Any]:
        import openai

        try:
            client = await self._clients.get()
            stream = await client.chat.completions.create(**payload)
            async for chunk in stream:
                yield chunk.model_dump(warnings=False)
        except (openai.APIError, ValueError) as e:
            raise _sdk_failure(e) from e

    async def aclose(self) -> None:
        await self._clients.aclose()


def _sdk_failure(e: Exception) -> HTTPFailure:
    import openai

    if isinstance(e, openai.APITimeoutError):  # before APIConnectionError, its base class
        return TimeoutFailure(type(e).__name__)
    if isinstance(e, openai.APIConnectionError):
        return ConnectFailure(type(e).__name__)
    if isinstance(e, openai.APIStatusError):
        headers = {k.lower(): v for k, v in e.response.headers.items()}
        try:
            body = e.response.content
        except Exception:  # noqa: BLE001 - a streamed response whose body was not read
            body = json.dumps({"error": {"message": str(getattr(e, "message", "") or e)}}).encode()
        return StatusFailure(e.status_code, headers, body)
    return ProtocolFailure(f"{type(e).__name__}: {e}")


def normalize_http_client(value: str, where: str) -> str:
    """`value` as one of HTTP_CLIENTS; a deprecated name becomes `aiohttp`, with a warning."""
    if value in DEPRECATED_HTTP_CLIENTS:
        warnings.warn(
            f"{where}: http_client = {value!r} is deprecated: smoa's own HTTP client was replaced by "
            "aiohttp; write http_client = \"aiohttp\" (the default) or drop the line",
            FutureWarning,
            stacklevel=3,
        )
        return "aiohttp"
    if value not in HTTP_CLIENTS:
        raise ConfigError(f"{where}: http_client must be one of {', '.join(HTTP_CLIENTS)}, not {value!r}")
    return value


def _completion(d: Any, request: Request, backend: OpenAIBackend) -> Completion:
    choices = d.get("choices") if isinstance(d, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    msg = first.get("message") if isinstance(first, dict) else None
    if not isinstance(first, dict) or not isinstance(msg, dict):
        raise BackendError(f"{backend.describe()}: malformed response: no choices with a message", retryable=True)
    where = backend.describe()
    if request.tools and backend.native_tools:
        text = _tool_decision(msg, where)
    else:
        text = upstream.message_text(msg, where, first.get("finish_reason"))
    prompt_tokens, completion_tokens = upstream.usage_counts(d.get("usage"), where)
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=upstream.model_name(d.get("model"), request.model),
        finish_reason=first.get("finish_reason"),
    )


def _tool_decision(msg: dict[str, Any], where: str) -> str:
    """A native tool-calling reply as the decision JSON smoa.server.tools asks for:
    {"tool_calls": [{"name", "arguments"}], "content"}. Arguments that are not JSON stay a
    string, which the decision's schema check then refuses (and the server repairs)."""
    import json

    calls = []
    for c in msg.get("tool_calls") or ():
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BackendError(f"{where}: malformed response: a tool call without function.name", retryable=True)
        args: Any = fn.get("arguments") or "{}"
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            pass
        calls.append({"name": fn["name"], "arguments": args})
    content = msg.get("content")
    text = content if isinstance(content, str) else upstream.message_text(msg, where) if isinstance(content, list) else ""
    return json.dumps({"tool_calls": calls, "content": text or ""}, ensure_ascii=False)


def _status_error(e: StatusFailure, backend: OpenAIBackend) -> BackendError:
    where = backend.describe()
    if 300 <= e.status < 400:
        return upstream.redirect_error(e.status, e.headers, where)
    if e.status == 401:
        msg = f"{where}: the endpoint refused the API key (401): check the key variable"
    elif e.status == 404:
        msg = f"{where}: not found (404): check the model name and base_url"
    else:
        msg = f"{where}: the endpoint answered {e.status}: {_first_line(e.message)}"
    err_cls = ContextLengthError if e.status == 400 and _is_context_error(e.message) else BackendError
    return err_cls(msg, status_code=e.status, retry_after=_retry_after_headers(e.headers))


def _failure(e: HTTPFailure, backend: OpenAIBackend) -> BackendError:
    where = backend.describe()
    if isinstance(e, ConnectFailure):
        return BackendError(
            f"{where}: cannot reach the endpoint ({_first_line(str(e))}): check base_url and that the server is running",
            retryable=True,
        )
    if isinstance(e, TimeoutFailure):
        return BackendError(f"{where}: no reply in time ({e}): the endpoint is slow or hanging", retryable=True, timeout=True)
    # ProtocolFailure (StatusFailure is _status_error's)
    return BackendError(f"{where}: malformed response: {_first_line(str(e))}", retryable=True)


def _rejects_structured(status: int | None, message: str) -> bool:
    """Whether an error says the endpoint cannot take the response_format we sent.

    400/422 are plain refusals; some servers (llama-cpp-python's) answer 500 with a
    request-validation message instead."""
    if _is_context_error(message):
        return False
    if status in (400, 422):
        return True
    text = message.lower()
    return status == 500 and any(w in text for w in ("validation", "response_format", "schema", "grammar"))


def _is_context_error(message: str) -> bool:
    text = message.lower()
    return "context" in text and ("length" in text or "window" in text or "too long" in text)


def _retry_after_headers(headers: Mapping[str, str] | None) -> float | None:
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


def _split_credentials(url: str) -> tuple[str, str | None]:
    """(url without user:password@, an HTTP Basic Authorization value or None)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if parts.username is None and parts.password is None:
        return url, None
    import base64

    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def _first_line(s: str) -> str:
    return clip((s.strip().splitlines() or [""])[0], 300)  # masked before it is cut
