"""The openai backend's HTTP transport: aiohttp, JSON in, JSON (or server-sent events) out.

aiohttp is the HTTP client; this module only adapts it to the backend's two calls
(`request_json`, `stream_events`) and turns its exceptions into the few failures the
backend maps to `BackendError` (status, Retry-After, retryable, timeout). From aiohttp:

- one `ClientSession` per event loop, so one backend works under successive
  `asyncio.run` calls. A session ends with its loop or with `aclose()` (smoa.backends.perloop);
  nothing is left for the garbage collector to warn about;
- a keep-alive pool (`TCPConnector`) of at most `max_connections` connections, idle ones
  kept `KEEPALIVE_S`; TCP_NODELAY (aiohttp sets it on every connection); TLS verified
  with a context made when the transport is made (so `SSL_CERT_FILE`/`SSL_CERT_DIR` count);
- compression (gzip, deflate; br with brotli installed), HTTP/1.0 and 1xx answers,
  (redirects are not followed: a 3xx is a StatusFailure, named by smoa.backends.upstream), chunked and close-delimited bodies: as aiohttp does them;
- proxies from `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` minus `NO_PROXY` (https through
  CONNECT), read once when the transport is made (`proxy_for`). Not `trust_env=True`: that
  re-reads the environment and `~/.netrc` in a worker thread on every request (two
  thread hand-offs per call), and a netrc entry for the endpoint's host would clash with
  the Authorization header this backend sends.

Time-outs (`timeout_s`): a whole non-streaming request; for a stream, the connection and
then each read (a stream may run long as long as bytes keep coming).

What stays ours, and why: the server-sent-events reader (the few rules of the SSE format
that OpenAI-style streams use: `data:` lines, a blank line ends an event, `[DONE]`); the
SSE client packages for aiohttp are unmaintained EventSource clients (GET, reconnects),
not readers of a POST's answer.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from yarl import URL

from ..redaction import clip
from .perloop import PerLoop

DEFAULT_MAX_CONNECTIONS = 256
# Idle connections are dropped before the servers in front of most model servers drop them
# (uvicorn's default keep-alive is 5 s: vLLM, SGLang, llama-cpp-python), so that a request
# rarely leaves on a connection the server is closing; a POST is not resent (RFC 9112, 9.3.1).
KEEPALIVE_S = 4.0
# aiohttp's read buffer; a stream's line (one SSE line) may be up to twice this long.
READ_BUFSIZE = 1 << 20

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
_GET_HEADERS = {"Accept": "application/json"}
_SSE_HEADERS = {"Accept": "text/event-stream", "Content-Type": "application/json"}
# what aiohttp raises for a failed exchange (HttpProcessingError: e.g. a line too long)
_ERRORS = (TimeoutError, aiohttp.ClientError, HttpProcessingError, ValueError)


class InvalidURL(ValueError):
    """The base URL is not an http(s) URL with a host."""


class InvalidHeader(ValueError):
    """A header (e.g. one carrying an API key) cannot be sent in HTTP/1.1."""


class UnsupportedProxy(ValueError):
    """The environment's proxy for the endpoint is not an http:// proxy (e.g. socks5://)."""


class HTTPFailure(Exception):
    """Base class: every failure of a transport is one of the subclasses below."""


class ConnectFailure(HTTPFailure):
    """The connection could not be made (refused, unknown host, TLS handshake, proxy)."""


class TimeoutFailure(HTTPFailure):
    """No reply (or, in a stream, no next bytes) within the time-out."""


class ProtocolFailure(HTTPFailure):
    """The server's bytes are not valid HTTP or JSON, or the connection broke mid-response."""


class StatusFailure(HTTPFailure):
    """The server answered with a status >= 300."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        super().__init__(f"HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        """The error's message: `error.message` of an OpenAI-style JSON body, else the text."""
        text = self.body.decode("utf-8", errors="replace").strip()
        try:
            d = json.loads(text)
        except ValueError:
            return clip(text)
        if isinstance(d, dict):
            err = d.get("error", d)
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str):
                return err
            if d.get("detail"):
                return str(d["detail"])
        return clip(text)


def proxy_for(url: str) -> str | None:
    """The proxy that HTTP_PROXY/HTTPS_PROXY/ALL_PROXY (minus NO_PROXY) give for `url`, if any."""
    u = URL(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy:
        return None
    try:
        if urllib.request.proxy_bypass(u.host or ""):
            return None
    except Exception:  # noqa: BLE001 - a malformed NO_PROXY: the proxy applies
        pass
    return proxy if "://" in proxy else f"http://{proxy}"


class AiohttpTransport:
    """One endpoint (base URL, headers, time-out); safe to share across tasks and loops."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 600.0,
                 max_connections: int | None = None) -> None:
        try:
            u = URL(base_url)
        except (TypeError, ValueError) as e:
            raise InvalidURL(f"not an http(s) URL: {base_url!r}") from e
        if u.scheme not in ("http", "https") or not u.host:
            raise InvalidURL(f"not an http(s) URL: {base_url!r}")
        self.base_url = str(u).rstrip("/")
        self.headers = dict(headers or {})
        for k, v in self.headers.items():
            try:
                f"{k}: {v}".encode("latin-1")
            except UnicodeEncodeError as e:
                raise InvalidHeader(f"header {k!r} has characters HTTP headers cannot carry") from e
            if any(ch in f"{k}{v}" for ch in "\r\n"):
                raise InvalidHeader(f"header {k!r} contains a line break")
        self.timeout_s = timeout_s
        self.max_connections = max_connections or DEFAULT_MAX_CONNECTIONS
        self.proxy = proxy_for(self.base_url)
        if self.proxy is not None and URL(self.proxy).scheme != "http":
            raise UnsupportedProxy(f"the proxy the environment gives for {self.base_url} is a "
                                   f"{URL(self.proxy).scheme}:// proxy; aiohttp speaks to http:// proxies")
        self._ssl = ssl.create_default_context() if u.scheme == "https" else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        self._urls: dict[str, URL] = {}
        self._sessions = PerLoop(self._new_session, aiohttp.ClientSession.close, lambda s: s.closed)
        self._session = self._sessions.get  # this loop's session

    # -- sessions ----------------------------------------------------------------------
    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=KEEPALIVE_S,
                                         ssl=self._ssl if self._ssl is not None else True)
        return aiohttp.ClientSession(connector=connector, headers=self.headers, timeout=self._timeout,
                                     read_bufsize=READ_BUFSIZE)

    async def aclose(self) -> None:
        """Close this loop's session (its idle connections); the transport stays usable."""
        await self._sessions.aclose()

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    # -- calls -------------------------------------------------------------------------
    async def request_json(self, method: str, path: str, payload: Any | None = None) -> Any:
        """One request; returns the JSON body. Raises StatusFailure for status >= 300 (redirects
        are not followed: smoa.backends.upstream names them as errors)."""
        body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        session = await self._session()
        try:
            async with session.request(method, self._url(path), data=body, proxy=self.proxy, allow_redirects=False,
                                       headers=_GET_HEADERS if body is None else _JSON_HEADERS) as resp:
                raw = await resp.read()
                status = resp.status
                if status >= 300:
                    headers = {k.lower(): v for k, v in resp.headers.items()}
        except _ERRORS as e:
            raise _failure(e, self.timeout_s) from e
        if status >= 300:  # a redirect is not followed: a POST would come back as a GET elsewhere
            raise StatusFailure(status, headers, raw)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:  # RecursionError: JSON nested beyond any reason
            raise ProtocolFailure(f"the body is not JSON ({e})") from e

    async def stream_events(self, path: str, payload: Any) -> AsyncIterator[Any]:
        """POST, then yield each server-sent event's `data` parsed as JSON, until `[DONE]`.

        Ends without raising when the body ends; the caller decides whether the stream was
        complete (OpenAI streams end with a chunk that has a finish_reason)."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        session = await self._session()
        try:
            resp = await session.request("POST", self._url(path), data=body, proxy=self.proxy, allow_redirects=False,
                                         headers=_SSE_HEADERS, timeout=self._stream_timeout)
        except _ERRORS as e:
            raise _failure(e, self.timeout_s) from e
        try:
            if resp.status >= 300:
                raw = await resp.read()
                raise StatusFailure(resp.status, {k.lower(): v for k, v in resp.headers.items()}, raw)
            data_lines: list[bytes] = []
            readline = resp.content.readline
            while True:
                line = await readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data_lines.append(line[6:] if line[5:6] == b" " else line[5:])
                elif not line and data_lines:
                    data = b"\n".join(data_lines)
                    data_lines = []
                    if data.strip() == b"[DONE]":
                        return
                    yield _event(data)
            if data_lines:  # a last event with no blank line after it
                data = b"\n".join(data_lines)
                if data.strip() != b"[DONE]":
                    yield _event(data)
        except _ERRORS as e:
            raise _failure(e, self.timeout_s, streaming=True) from e
        finally:
            resp.release()  # back to the pool when the body was read to its end, else closed


def _event(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ProtocolFailure(f"an event is not JSON ({e})") from e


def _failure(e: BaseException, timeout_s: float, streaming: bool = False) -> HTTPFailure:
    """aiohttp's exception as one of ours, with a message a user can act on."""
    if isinstance(e, TimeoutError):  # includes aiohttp's ServerTimeoutError, ConnectionTimeoutError
        what = "no next bytes" if streaming else "no reply"
        return TimeoutFailure(f"{what} within {timeout_s:g} s")
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return ConnectFailure(f"TLS failed: certificate verify failed ({getattr(e.certificate_error, 'reason', None) or e.certificate_error})")
    if isinstance(e, aiohttp.ClientSSLError):
        return ConnectFailure(f"TLS failed: {e}")
    if isinstance(e, aiohttp.ClientHttpProxyError):
        return ConnectFailure(f"the proxy refused the connection ({e.status} {e.message})")
    if isinstance(e, aiohttp.ClientProxyConnectionError):
        return ConnectFailure(f"cannot reach the proxy ({e.os_error.strerror or e.os_error})")
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return ConnectFailure(f"unknown host {e.host!r}")
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        return ConnectFailure("connection refused" if isinstance(err, ConnectionRefusedError)
                              else f"{type(err).__name__}: {err.strerror or err}")
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return ProtocolFailure("the server closed the connection without answering")
    if isinstance(e, aiohttp.ClientPayloadError):
        return ProtocolFailure(f"the {'stream' if streaming else 'response'} was cut off ({_first_line(e)})")
    if isinstance(e, aiohttp.ClientResponseError):  # the parser's: not valid HTTP
        return ProtocolFailure(f"not a valid HTTP response ({_first_line(e.message)})")
    if isinstance(e, LineTooLong):
        return ProtocolFailure(f"a line of the response is longer than {2 * READ_BUFSIZE} bytes")
    if isinstance(e, HttpProcessingError):
        return ProtocolFailure(f"not a valid HTTP response ({_first_line(e.message)})")
    if isinstance(e, aiohttp.ClientOSError):
        return ProtocolFailure(f"the connection broke ({type(e).__name__}: {_first_line(e)})")
    if isinstance(e, ValueError):
        return ProtocolFailure(f"unreadable response ({_first_line(e)})")
    return ProtocolFailure(f"{type(e).__name__}: {_first_line(e)}")


def _first_line(x: object) -> str:
    return clip((str(x).strip().splitlines() or [""])[0], 200)
