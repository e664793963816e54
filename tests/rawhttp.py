"""Raw, scripted HTTP servers (and a proxy) on 127.0.0.1 for the openai backend's HTTP tests.

A `RawServer`'s handler reads requests and writes hand-made response bytes, so every
framing case (lengths, chunks, close-delimited bodies, keep-alive, broken or stalled
replies, server-sent events) reaches the client exactly as a test writes it. `RawProxy`
is a tiny forward proxy (absolute-form requests and CONNECT tunnels) that records what
passed through it. `backend`, `collect` and `deltas_until_failure` drive the openai backend
against them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import ssl
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from smoa import BackendError
from smoa.backends.openai_backend import OpenAIBackend
from smoa.types import Request, Settings

# -- a scripted raw server ------------------------------------------------------------


@dataclass
class Req:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Conn:
    """One accepted connection, as the handler sees it."""

    def __init__(self, server: RawServer, index: int, reader, writer) -> None:
        self.server, self.index, self.reader, self.writer = server, index, reader, writer
        self.requests: list[Req] = []

    async def read_request(self) -> Req | None:
        """The next request, or None when the client closed the connection."""
        line = await self.reader.readline()
        if not line:
            self.server.eofs += 1
            return None
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers = {}
        while (h := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode("latin-1").rstrip("\r\n").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        req = Req(method, target, version, headers, body)
        self.requests.append(req)
        self.server.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """`async with RawServer(handler) as srv:` serves 127.0.0.1:srv.port, one handler task
    per accepted connection; counts connections, requests and EOFs seen from the client."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl_ctx = handler, ssl_ctx
        self.conns: list[Conn] = []
        self.requests: list[Req] = []
        self.eofs = 0
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task] = set()

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def url(self, path: str = "/v1", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _on_conn(self, reader, writer) -> None:
        self._tasks.add(asyncio.current_task())
        conn = Conn(self, len(self.conns), reader, writer)
        self.conns.append(conn)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass  # the client went away (some tests do exactly that), or the test ended
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        assert not self.errors, f"the test server's handler failed: {self.errors!r}"

    async def wait_for(self, cond: Callable[[], bool], timeout_s: float = 3.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "the server never saw the expected event"
            await asyncio.sleep(0.01)


class ThreadedServer:
    """A RawServer on its own event loop in a thread: it outlives the test's asyncio.run calls."""

    def __init__(self, handler: Handler) -> None:
        self.srv = RawServer(handler)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.__aenter__(), self.loop).result(5)
        return self.srv

    def __exit__(self, *exc) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.srv.__aexit__(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


def run(coro_fn: Callable[[], Awaitable], limit_s: float = 15):
    """Run a test's body on a fresh event loop; a hang fails it after `limit_s`, and so does
    any ResourceWarning (a session, connector, transport or socket left unclosed) seen while
    the loop ran or when its leftovers were collected."""

    async def bounded():
        async with asyncio.timeout(limit_s):
            return await coro_fn()

    with no_leaks():
        return asyncio.run(bounded())


@contextlib.contextmanager
def no_leaks():
    """Fails when what runs inside leaves anything unclosed (a ResourceWarning: a session,
    connector, transport or socket), seen while it ran or when its garbage was collected."""
    # earlier tests' garbage is collected first, outside the window: only this block's
    # leftovers count (a transport another test dropped was once blamed on the first test here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"left unclosed: {leaks}"


# -- response bytes -------------------------------------------------------------------


def response(status: int = 200, body: bytes | str = b"{}", headers: list[str] | None = None,
             reason: str = "OK", version: str = "HTTP/1.1") -> bytes:
    """A response with a Content-Length body."""
    body = body.encode() if isinstance(body, str) else body
    head = [f"{version} {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(headers or [])]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked_head(status: int = 200, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()


SSE_HEAD = chunked_head(content_type="text/event-stream")
SSE_CLOSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"  # ends at close


def chunk(data: bytes | str, ext: str = "") -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return f"{len(data):x}{ext}\r\n".encode() + data + b"\r\n"


def chunked(*pieces: bytes | str, trailers: str = "") -> bytes:
    return chunked_head() + b"".join(chunk(p) for p in pieces) + b"0\r\n" + trailers.encode() + b"\r\n"


def completion(text: str = "4", model: str = "m1", usage: tuple[int, int] = (7, 1)) -> str:
    """An OpenAI chat completion body."""
    return json.dumps({"id": "c1", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})


OK_BODY = completion("4")
OK = response(body=OK_BODY)


def delta(text: str | None = None, finish: str | None = None, usage: tuple[int, int] | None = None) -> str:
    """One OpenAI stream chunk, as JSON."""
    d: dict = {"model": "m1", "choices": [{"index": 0, "delta": {"content": text} if text else {},
                                           "finish_reason": finish}]}
    if usage:
        d["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return json.dumps(d, ensure_ascii=False)


def sse(*texts: str, done: bool = True) -> str:
    """A whole OpenAI stream: one event per text, a last one with finish_reason, [DONE]."""
    events = [f"data: {delta(t)}\n\n" for t in texts]
    events.append(f"data: {delta(finish='stop', usage=(5, len(texts)))}\n\n")
    return "".join(events) + ("data: [DONE]\n\n" if done else "")


def answer_each(make: Callable[[Req], bytes] | bytes) -> Handler:
    """A keep-alive handler: every request on the connection gets `make(req)` (or the bytes)."""

    async def handler(conn: Conn) -> None:
        while (req := await conn.read_request()) is not None:
            await conn.send(make(req) if callable(make) else make)

    return handler


def close_after(data: bytes) -> Handler:
    """Answer one request with `data`, then close the connection."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(data)
        conn.close()

    return handler


def stream_handler(*pieces: bytes, stall_after: bool = False, close: bool = True, gap_s: float = 0.005) -> Handler:
    """Answer one request with `pieces`, each in its own TCP segment (`gap_s` apart)."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        for p in pieces:
            await conn.send(p)
            await asyncio.sleep(gap_s)
        if stall_after:  # say nothing more; returns when the client closes the connection
            await conn.read_request()
        if close:
            conn.close()

    return handler


# -- the client side: the openai backend on a scripted server -------------------------


def req(text: str = "What is 2+2? héllo, 世界 🙂", **settings) -> Request:
    return Request(messages=({"role": "user", "content": text},), model="m1", settings=Settings(**settings))


def backend(srv_or_url, **kw) -> OpenAIBackend:
    url = srv_or_url if isinstance(srv_or_url, str) else srv_or_url.url()
    return OpenAIBackend(base_url=url, max_retries=0, **kw)


async def collect(be: OpenAIBackend, request: Request | None = None) -> tuple[list[str], object]:
    """The deltas of a stream and its final completion."""
    deltas, final = [], None
    async for ev in be.stream(request or req()):
        if ev.delta:
            deltas.append(ev.delta)
        if ev.completion:
            final = ev.completion
    return deltas, final


async def deltas_until_failure(be: OpenAIBackend, match: str) -> tuple[list[str], BackendError]:
    """The deltas a stream yields before it fails with a BackendError (which it must)."""
    got: list[str] = []
    with pytest.raises(BackendError, match=match) as ei:
        async for ev in be.stream(req()):
            if ev.delta:
                got.append(ev.delta)
    return got, ei.value


# -- a forward proxy ------------------------------------------------------------------


class RawProxy:
    """An HTTP proxy on 127.0.0.1: absolute-form requests are forwarded, CONNECT tunnels
    piped; `routes` maps "host:port" to the address really used (so a test can name a host
    that does not resolve). `seen` lists the request lines it received; `status` (e.g. 407)
    refuses every request with that status instead."""

    def __init__(self, routes: dict[str, tuple[str, int]] | None = None, status: int | None = None) -> None:
        self.routes = routes or {}
        self.status = status
        self.seen: list[str] = []
        self.headers: list[dict[str, str]] = []  # of each request it received, names lowercased
        self._tasks: set[asyncio.Task] = set()

    def _target(self, hostport: str) -> tuple[str, int]:
        if hostport in self.routes:
            return self.routes[hostport]
        host, _, port = hostport.rpartition(":")
        return host, int(port)

    async def _on_conn(self, reader, writer) -> None:
        self._tasks.add(asyncio.current_task())
        try:
            line = await reader.readline()
            if not line:
                return
            head = [line]
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                head.append(h)
            method, target, _ = line.decode("latin-1").split(" ", 2)
            self.seen.append(f"{method} {target}")
            self.headers.append({k.strip().lower(): v.strip() for k, _, v in
                                 (h.decode("latin-1").rstrip("\r\n").partition(":") for h in head[1:])})
            if self.status:
                writer.write(f"HTTP/1.1 {self.status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                return
            if method == "CONNECT":
                up_r, up_w = await asyncio.open_connection(*self._target(target))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:  # absolute form: http://host[:port]/path
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                if ":" not in hostport:
                    hostport += ":80"
                up_r, up_w = await asyncio.open_connection(*self._target(hostport))
                up_w.write(f"{method} /{path} HTTP/1.1\r\n".encode() + b"".join(head[1:]) + b"\r\n")
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawProxy:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
