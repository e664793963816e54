"""smoa.backends.httpclient against raw, scripted HTTP servers on 127.0.0.1.

Each test starts a `RawServer` whose handler reads requests and writes hand-made response
bytes, so every framing case (lengths, chunks, close-delimited bodies, keep-alive, broken
or stalled replies, server-sent events) is exercised exactly as written here.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from smoa.backends.httpclient import (
    ConnectFailure,
    HTTPClient,
    HTTPFailure,
    ProtocolFailure,
    StatusFailure,
    TimeoutFailure,
)
from smoa.testing import free_port

pytestmark = pytest.mark.server


# -- a scripted raw server ------------------------------------------------------------


@dataclass
class Req:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lowercased
    header_lines: list[str]
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
        headers, header_lines = {}, []
        while (h := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            text = h.decode("latin-1").rstrip("\r\n")
            header_lines.append(text)
            k, _, v = text.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        req = Req(method, target, version, headers, header_lines, body)
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

    def url(self, path: str = "", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _on_conn(self, reader, writer) -> None:
        self._tasks.add(asyncio.current_task())
        conn = Conn(self, len(self.conns), reader, writer)
        self.conns.append(conn)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: some tests do exactly that
        except asyncio.CancelledError:
            pass
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

    async def wait_for(self, cond: Callable[[], bool], timeout_s: float = 2.0) -> None:
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


def chunk(data: bytes | str, ext: str = "") -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return f"{len(data):x}{ext}\r\n".encode() + data + b"\r\n"


def chunked(*pieces: bytes | str, trailers: str = "") -> bytes:
    return chunked_head() + b"".join(chunk(p) for p in pieces) + b"0\r\n" + trailers.encode() + b"\r\n"


def answer_each(make: Callable[[Req], bytes] | bytes) -> Handler:
    """A keep-alive handler: every request on the connection gets `make(req)` (or the bytes)."""

    async def handler(conn: Conn) -> None:
        while (req := await conn.read_request()) is not None:
            await conn.send(make(req) if callable(make) else make)

    return handler


def echo(req: Req) -> bytes:
    return response(body=json.dumps({"got": req.json() if req.body else None, "path": req.target}))


def run(coro_fn: Callable[[], Awaitable], limit_s: float = 10, all_closed: bool = False):
    """Run a test's body on a fresh event loop; a hang fails it after `limit_s`.

    all_closed: fail if a connection was dropped unclosed while the loop ran (asyncio's
    "unclosed <StreamWriter" warning): the client must close what it does not pool. Such a
    test ends with `await client.aclose()`, so that the idle pool is not what is reported."""

    async def bounded():
        async with asyncio.timeout(limit_s):
            return await coro_fn()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = asyncio.run(bounded())
        gc.collect()
    unclosed = [str(w.message) for w in caught if "unclosed <StreamWriter" in str(w.message)]
    assert not (all_closed and unclosed), f"connections dropped without being closed: {unclosed}"
    return result


# -- response framing -----------------------------------------------------------------


def test_content_length_json_body():
    async def main():
        async with RawServer(answer_each(response(body='{"a": [1, 2], "b": "x"}'))) as srv:
            assert await HTTPClient(srv.url()).request_json("POST", "/x", {"q": 1}) == {"a": [1, 2], "b": "x"}

    run(main)


def test_chunked_json_body_with_extensions_and_trailers():
    body = (chunked_head() + chunk('{"text": ') + chunk('"hel', ext=";x=y") + chunk('lo", "n"', ext="; name=\"v\"")
            + chunk(": 3}") + b"0;last=1\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n")

    async def main():
        async with RawServer(answer_each(body)) as srv:
            client = HTTPClient(srv.url())
            for _ in range(3):  # the trailers were consumed: the next response parses cleanly
                assert await client.request_json("POST", "/x", {}) == {"text": "hello", "n": 3}
            assert client.connections_opened == 1 and srv.accepted == 1

    run(main)


def test_chunk_size_in_upper_case_hex():
    big = json.dumps({"s": "z" * 300}).encode()

    async def main():
        reply = chunked_head() + f"{len(big):X}\r\n".encode() + big + b"\r\n0\r\n\r\n"
        async with RawServer(answer_each(reply)) as srv:
            assert await HTTPClient(srv.url()).request_json("GET", "/") == {"s": "z" * 300}

    run(main)


def test_body_delimited_by_connection_close_and_not_reused():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"part\": ")
        await asyncio.sleep(0.05)  # the body comes in two pieces; only the close ends it
        await conn.send(b"\"one\"}")
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            assert await client.request_json("POST", "/x", {}) == {"part": "one"}
            assert await client.request_json("POST", "/x", {}) == {"part": "one"}
            assert client.connections_opened == 2 and srv.accepted == 2
            assert [len(c.requests) for c in srv.conns] == [1, 1]

    run(main, all_closed=True)


def test_status_line_without_reason_phrase():
    async def main():
        reply = b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}"
        async with RawServer(answer_each(reply)) as srv:
            assert await HTTPClient(srv.url()).request_json("GET", "/") == {}

    run(main)


def test_204_no_content_does_not_wait_for_the_connection_to_close():
    """A 204 (like 304, and 1xx) never has a body (RFC 9112 section 6.3), whatever the
    headers: the client must not read until the connection closes (here: until its time-out)."""

    async def main():
        async with RawServer(answer_each(b"HTTP/1.1 204 No Content\r\n\r\n")) as srv:
            client = HTTPClient(srv.url(), timeout_s=1.5)
            t0 = time.monotonic()
            try:
                await client.request_json("DELETE", "/x")
            except ProtocolFailure:
                pass  # an empty body is not JSON: acceptable, as long as it comes at once
            except TimeoutFailure:
                pytest.fail(f"a 204 was read as a close-delimited body: TimeoutFailure after "
                            f"{time.monotonic() - t0:.1f} s")
            assert time.monotonic() - t0 < 1

    run(main)


def test_100_continue_before_the_real_response():
    async def main():
        reply = b"HTTP/1.1 100 Continue\r\n\r\n" + response(body='{"final": true}')
        async with RawServer(answer_each(reply)) as srv:
            client = HTTPClient(srv.url())
            assert await client.request_json("POST", "/x", {}) == {"final": True}
            assert await client.request_json("POST", "/x", {}) == {"final": True}  # framing intact
            assert client.connections_opened == 1

    run(main)


# -- the request the server receives --------------------------------------------------


def test_request_line_headers_and_body():
    payload = {"model": "m", "messages": [{"role": "user", "content": "héllo, 世界 🙂"}]}

    async def main():
        async with RawServer(answer_each(echo)) as srv:
            client = HTTPClient(srv.url("/v1"), headers={"Authorization": "Bearer sk-test", "X-Extra": "1"})
            got = await client.request_json("POST", "/chat/completions", payload)
            req = srv.requests[0]
            assert (req.method, req.target, req.version) == ("POST", "/v1/chat/completions", "HTTP/1.1")
            assert req.headers["host"] == f"127.0.0.1:{srv.port}"
            assert req.headers["content-type"] == "application/json"
            assert req.headers["authorization"] == "Bearer sk-test"
            assert req.headers["x-extra"] == "1"
            assert req.headers["accept-encoding"] == "identity"
            assert int(req.headers["content-length"]) == len(req.body)
            assert json.loads(req.body.decode("utf-8")) == payload
            assert "héllo, 世界 🙂".encode() in req.body  # UTF-8, not \u escapes
            assert got == {"got": payload, "path": "/v1/chat/completions"}

    run(main)


def test_trailing_slash_of_base_url_and_get_without_body():
    async def main():
        async with RawServer(answer_each(echo)) as srv:
            client = HTTPClient(srv.url("/v1/"))
            assert await client.request_json("GET", "/models") == {"got": None, "path": "/v1/models"}
            req = srv.requests[0]
            assert req.method == "GET" and req.body == b""
            assert "content-length" not in req.headers and "content-type" not in req.headers
            assert (await HTTPClient(srv.url()).request_json("GET", "/models"))["path"] == "/models"

    run(main)


def test_host_header_and_bad_urls():
    assert HTTPClient("http://example.com/v1").host_header == "example.com"
    assert HTTPClient("https://example.com:443").host_header == "example.com"
    assert HTTPClient("https://example.com:8443/v1").host_header == "example.com:8443"
    assert HTTPClient("http://[::1]:8080/v1").host_header == "[::1]:8080"
    c = HTTPClient("https://example.com/api/v1/")
    assert (c.scheme, c.host, c.port, c.base_path) == ("https", "example.com", 443, "/api/v1")
    for bad in ("ftp://x", "nonsense", "http://", "", "127.0.0.1:8000/v1"):
        with pytest.raises(ValueError):
            HTTPClient(bad)


# -- keep-alive -----------------------------------------------------------------------


def test_sequential_requests_share_one_connection():
    async def main():
        async with RawServer(answer_each(echo)) as srv:
            client = HTTPClient(srv.url("/v1"))
            for i in range(10):
                assert (await client.request_json("POST", "/x", {"i": i}))["got"] == {"i": i}
            assert client.connections_opened == 1 and srv.accepted == 1
            assert len(srv.conns[0].requests) == 10

    run(main)


def test_chunked_responses_keep_the_connection_alive():
    async def main():
        async with RawServer(answer_each(lambda req: chunked('{"i": ', str(req.json()["i"]), "}"))) as srv:
            client = HTTPClient(srv.url())
            for i in range(5):
                assert await client.request_json("POST", "/x", {"i": i}) == {"i": i}
            assert client.connections_opened == 1 and srv.accepted == 1

    run(main)


def test_concurrent_requests_then_reuse_of_the_pool():
    async def handler(conn: Conn) -> None:
        while (req := await conn.read_request()) is not None:
            await asyncio.sleep(0.02)  # all 20 are in flight together
            await conn.send(echo(req))

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            for _ in range(2):
                got = await asyncio.gather(*(client.request_json("POST", "/x", {"i": i}) for i in range(20)))
                assert [g["got"]["i"] for g in got] == list(range(20))
            assert client.connections_opened == 20 and srv.accepted == 20  # the second round reused them
            assert len(srv.requests) == 40

    run(main)


def test_connection_close_header_opens_a_new_connection():
    async def main():
        # the server keeps the socket open: only the header tells the client not to reuse it
        reply = response(body='{"ok": 1}', headers=["Connection: close"])
        async with RawServer(answer_each(reply)) as srv:
            client = HTTPClient(srv.url())
            for _ in range(3):
                assert await client.request_json("POST", "/x", {}) == {"ok": 1}
            assert client.connections_opened == 3 and srv.accepted == 3
            assert [len(c.requests) for c in srv.conns] == [1, 1, 1]
            await srv.wait_for(lambda: srv.eofs == 3)  # and the client closed each one

    run(main, all_closed=True)


def test_http10_response_is_not_reused_unless_keep_alive():
    async def main():
        async with RawServer(answer_each(response(body='{"v": 10}', version="HTTP/1.0"))) as srv:
            client = HTTPClient(srv.url())
            for _ in range(2):
                assert await client.request_json("POST", "/x", {}) == {"v": 10}
            assert client.connections_opened == 2 and [len(c.requests) for c in srv.conns] == [1, 1]
        reply = response(body='{"v": 10}', version="HTTP/1.0", headers=["Connection: Keep-Alive"])
        async with RawServer(answer_each(reply)) as srv:
            client = HTTPClient(srv.url())
            for _ in range(2):
                assert await client.request_json("POST", "/x", {}) == {"v": 10}
            assert client.connections_opened == 1 and [len(c.requests) for c in srv.conns] == [2]
            await client.aclose()

    run(main, all_closed=True)


def test_idle_connection_closed_by_the_server_is_replaced():
    async def handler(conn: Conn) -> None:  # answers one request, then closes quietly
        req = await conn.read_request()
        await conn.send(echo(req))
        await asyncio.sleep(0.05)
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            for i in range(3):
                assert (await client.request_json("POST", "/x", {"i": i}))["got"] == {"i": i}
                await srv.wait_for(lambda i=i: srv.conns[i].writer.is_closing())
                await asyncio.sleep(0.05)  # the FIN reaches the client while its connection is idle
            assert client.connections_opened == 3 and [len(c.requests) for c in srv.conns] == [1, 1, 1]
            await client.aclose()

    run(main, all_closed=True)


def test_keep_alive_race_is_retried_once_on_a_new_connection():
    """The server read the request on the reused connection, then closed it without a byte:
    the classic keep-alive race. The client resends once on a fresh connection."""

    async def handler(conn: Conn) -> None:
        req = await conn.read_request()
        await conn.send(echo(req))
        if conn.index == 0:
            await conn.read_request()  # the second request arrives on the reused connection...
            conn.close()  # ...and is dropped unanswered
        else:
            while (req := await conn.read_request()) is not None:
                await conn.send(echo(req))

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            assert (await client.request_json("POST", "/x", {"i": 1}))["got"] == {"i": 1}
            assert (await client.request_json("POST", "/x", {"i": 2}))["got"] == {"i": 2}
            assert client.connections_opened == 2 and srv.accepted == 2
            assert [r.json() for r in srv.conns[0].requests] == [{"i": 1}, {"i": 2}]
            assert [r.json() for r in srv.conns[1].requests] == [{"i": 2}]
            assert (await client.request_json("POST", "/x", {"i": 3}))["got"] == {"i": 3}
            assert client.connections_opened == 2
            await client.aclose()

    run(main, all_closed=True)


def test_reused_connection_broken_after_part_of_a_response_is_not_retried():
    async def handler(conn: Conn) -> None:
        req = await conn.read_request()
        await conn.send(echo(req))
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")  # something was read: resending is unsafe
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            await client.request_json("POST", "/x", {})
            with pytest.raises(ProtocolFailure):
                await client.request_json("POST", "/x", {})
            assert len(srv.requests) == 2 and srv.accepted == 1

    run(main, all_closed=True)


def test_reused_connection_closed_after_an_interim_100_is_not_retried():
    """A retry is safe only when nothing at all was read back; after a `100 Continue` the
    server has the request, so resending it (a second POST) is not transparent."""

    async def handler(conn: Conn) -> None:
        req = await conn.read_request()
        await conn.send(echo(req))
        if conn.index == 0:
            await conn.read_request()
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.close()
        else:
            while (req := await conn.read_request()) is not None:
                await conn.send(echo(req))

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            await client.request_json("POST", "/x", {"i": 1})
            try:
                await client.request_json("POST", "/x", {"i": 2})
            except ProtocolFailure:
                pass  # expected: the server broke off after answering 100
            sent = [r.json() for r in srv.requests].count({"i": 2})
            assert sent == 1, f"the POST was sent {sent} times although a 100 Continue had been read"
            await client.aclose()

    run(main, all_closed=True)


def test_fresh_connection_closed_without_answer_is_a_protocol_failure():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url(), timeout_s=2)
            with pytest.raises(ProtocolFailure, match="without answering"):
                await client.request_json("POST", "/x", {})
            assert len(srv.requests) == 1 and srv.accepted == 1  # not retried

    run(main, all_closed=True)


def test_aclose_closes_idle_connections():
    async def main():
        async with RawServer(answer_each(echo)) as srv:
            client = HTTPClient(srv.url())
            await asyncio.gather(*(client.request_json("POST", "/x", {}) for _ in range(3)))
            assert srv.accepted == 3 and srv.eofs == 0
            await client.aclose()
            await srv.wait_for(lambda: srv.eofs == 3)
            await client.request_json("POST", "/x", {})  # still usable: a new connection
            assert client.connections_opened == 4
            await client.aclose()

    run(main, all_closed=True)


def test_successive_event_loops_get_their_own_pool():
    with ThreadedServer(answer_each(echo)) as srv:
        client = HTTPClient(srv.url("/v1"))

        async def twice(i):
            for j in range(2):
                assert (await client.request_json("POST", "/x", {"i": i, "j": j}))["got"] == {"i": i, "j": j}

        for i in range(3):
            asyncio.run(twice(i))
        assert client.connections_opened == 3  # one per loop, reused within it
        assert [len(c.requests) for c in srv.conns] == [2, 2, 2]

        async def close():
            await client.aclose()

        asyncio.run(close())  # the pools of finished loops hold dead connections: no error


def test_connections_of_a_finished_loop_are_not_kept_open():
    """Once the loop that owned an idle connection is gone, nothing can use that connection:
    it should be closed, not held (with the dead loop) for as long as the client lives."""
    with ThreadedServer(answer_each(echo)) as srv:
        client = HTTPClient(srv.url())
        for _ in range(3):
            asyncio.run(client.request_json("POST", "/x", {}))
        gc.collect()
        deadline = time.monotonic() + 1
        while srv.eofs < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.accepted == 3
        assert srv.eofs >= 2, (
            f"the server saw {srv.eofs} of the connections of the 2 earlier, finished event loops "
            f"closed; the client still holds {len(client._idle)} per-loop pools (closed loops included)")


# -- status >= 400 --------------------------------------------------------------------


def test_status_failure_with_openai_error_body_and_headers():
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit", "code": None}})

    async def main():
        reply = response(429, body, headers=["Retry-After: 7", "X-Request-ID: abc"], reason="Too Many Requests")
        async with RawServer(answer_each(reply)) as srv:
            client = HTTPClient(srv.url())
            with pytest.raises(StatusFailure) as ei:
                await client.request_json("POST", "/x", {})
            e = ei.value
            assert e.status == 429 and e.message == "Rate limit reached"
            assert e.headers["retry-after"] == "7" and e.headers["x-request-id"] == "abc"
            assert e.body == body.encode() and "429" in str(e) and "Rate limit reached" in str(e)
            assert isinstance(e, HTTPFailure)
            with pytest.raises(StatusFailure):  # the error body was read: the connection is reused
                await client.request_json("POST", "/x", {})
            assert client.connections_opened == 1

    run(main, all_closed=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("upstream exploded\n", "upstream exploded"),
        ('{"detail": "Not Found"}', "Not Found"),
        ('{"error": "model not loaded"}', "model not loaded"),
        ('{"message": "bad input"}', "bad input"),
        ("[1, 2]", "[1, 2]"),
        ("", ""),
        ("x" * 1000, "x" * 300),
    ],
)
def test_status_failure_message(body, message):
    async def main():
        async with RawServer(answer_each(response(500, body, reason="Internal Server Error"))) as srv:
            with pytest.raises(StatusFailure) as ei:
                await HTTPClient(srv.url()).request_json("POST", "/x", {})
            assert ei.value.status == 500 and ei.value.message == message

    run(main, all_closed=True)


def test_status_failure_on_a_stream():
    async def main():
        reply = response(401, '{"error": {"message": "Invalid API key"}}', reason="Unauthorized")
        async with RawServer(answer_each(reply)) as srv:
            with pytest.raises(StatusFailure) as ei:
                async for _ in HTTPClient(srv.url()).stream_events("/x", {}):
                    pass
            assert ei.value.status == 401 and ei.value.message == "Invalid API key"

    run(main, all_closed=True)


# -- malformed replies ----------------------------------------------------------------


def _close_after(data: bytes) -> Handler:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(data)
        conn.close()

    return handler


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"SSH-2.0-OpenSSH_9.0\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 OK 200\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "inside the response headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\": 1", "cut off"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!", "not JSON"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\"", "cut off"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "cut off"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "too long"),
    ],
    ids=["not-http", "bad-status", "eof-in-headers", "short-body", "not-json", "bad-length",
         "bad-chunk-size", "cut-mid-chunk", "no-last-chunk", "huge-headers"],
)
def test_malformed_replies_are_protocol_failures(reply, match):
    async def main():
        async with RawServer(_close_after(reply)) as srv:
            client = HTTPClient(srv.url())
            with pytest.raises(ProtocolFailure, match=match):
                await client.request_json("POST", "/x", {})
            assert len(srv.requests) == 1
            await client.aclose()

    run(main, all_closed=True)


def test_negative_chunk_size_is_a_protocol_failure():
    """Every failure of the client is an HTTPFailure subclass; a chunk size of "-2" must not
    escape as readexactly's ValueError."""
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n"

    async def main():
        async with RawServer(_close_after(reply)) as srv:
            try:
                with pytest.raises(ProtocolFailure):
                    await HTTPClient(srv.url()).request_json("POST", "/x", {})
            except ValueError as e:
                pytest.fail(f"a negative chunk size escaped as {type(e).__name__}: {e}")

    run(main, all_closed=True)


# -- time-outs and connect failures ---------------------------------------------------


def test_no_answer_is_a_timeout_failure():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.read_request()  # no answer; returns when the client closes the connection

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url(), timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(TimeoutFailure):
                await client.request_json("POST", "/x", {})
            assert 0.25 <= time.monotonic() - t0 < 3
            await srv.wait_for(lambda: srv.eofs == 1)  # the stuck connection was closed, not pooled

    run(main, all_closed=True)


def test_body_that_stalls_midway_is_a_timeout_failure():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"a\":")
        await asyncio.Event().wait()

    async def main():
        async with RawServer(handler) as srv:
            t0 = time.monotonic()
            with pytest.raises(TimeoutFailure):
                await HTTPClient(srv.url(), timeout_s=0.3).request_json("POST", "/x", {})
            assert time.monotonic() - t0 < 3

    run(main, all_closed=True)


def test_connect_refused_is_a_connect_failure():
    async def main():
        client = HTTPClient(f"http://127.0.0.1:{free_port()}/v1", timeout_s=5)
        with pytest.raises(ConnectFailure):
            await client.request_json("POST", "/x", {})
        with pytest.raises(ConnectFailure):
            async for _ in client.stream_events("/x", {}):
                pass
        assert client.connections_opened == 0

    run(main)


# -- server-sent events ---------------------------------------------------------------


def _stream_handler(*pieces: bytes, stall_after: bool = False, close: bool = True) -> Handler:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        for p in pieces:
            await conn.send(p)
            await asyncio.sleep(0.005)  # separate TCP segments: the client sees each piece alone
        if stall_after:  # say nothing more; returns when the client closes the connection
            await conn.read_request()
        if close:
            conn.close()

    return handler


async def collect(client: HTTPClient, path: str = "/chat/completions", payload=None) -> list:
    return [e async for e in client.stream_events(path, payload if payload is not None else {"stream": True})]


async def collect_until_failure(client: HTTPClient, exc: type[Exception], match: str | None = None) -> list:
    """The events a stream yields before it fails with `exc` (which it must)."""
    got: list = []
    with pytest.raises(exc, match=match):
        async for e in client.stream_events("/x", {}):
            got.append(e)
    return got


def test_sse_events_split_at_awkward_places():
    e = "é"
    body = (
        'data: {"n": 1}\n\n'
        ": a comment line\r\n"
        "event: message\r\n"
        'data: {"n": 2, "s": "caf' + e + '"}\r\n\r\n'
        "id: 7\n"
        'data: {"n": 3,\n'
        'data: "multi": true}\n\n'
        'data:{"n": 4}\n\n'
        "data: [DONE]\n\n"
        'data: {"n": 5}\n\n'
    ).encode()
    cut_in_e = body.index(e.encode()) + 1  # inside the two bytes of é
    cuts = [3, 14, 30, cut_in_e, body.index(b"multi"), len(body) - 30]
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert b"".join(pieces) == body

    async def main():
        raw = chunked_head(content_type="text/event-stream") + b"".join(chunk(p) for p in pieces) + b"0\r\n\r\n"
        async with RawServer(_stream_handler(*[raw[i:i + 17] for i in range(0, len(raw), 17)])) as srv:
            client = HTTPClient(srv.url("/v1"), headers={"Authorization": "Bearer k"})
            got = await collect(client, payload={"stream": True, "q": "ü"})
            assert got == [{"n": 1}, {"n": 2, "s": "café"}, {"n": 3, "multi": True}, {"n": 4}]
            req = srv.requests[0]
            assert (req.method, req.target) == ("POST", "/v1/chat/completions")
            assert req.headers["accept"] == "text/event-stream" and req.headers["authorization"] == "Bearer k"
            assert req.json() == {"stream": True, "q": "ü"}

    run(main, all_closed=True)


def test_sse_multiline_data_is_joined_with_newlines():
    body = b'data: "line one\ndata: line two"\n\ndata: [DONE]\n\n'
    # a JSON string cannot hold a raw newline, so the joined data is not JSON: a ProtocolFailure,
    # which proves the two lines were joined with "\n" (the error names the control character)
    body_ok = b"data: [1,\ndata: 2]\n\ndata: [DONE]\n\n"

    async def main():
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        async with RawServer(_stream_handler(head + body_ok)) as srv:
            assert await collect(HTTPClient(srv.url())) == [[1, 2]]
        async with RawServer(_stream_handler(head + body)) as srv:
            with pytest.raises(ProtocolFailure, match="control character"):
                await collect(HTTPClient(srv.url()))

    run(main, all_closed=True)


def test_sse_last_event_without_blank_line_and_clean_end_without_done():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"

    async def main():
        # close-delimited body; the last event's line ends, but no blank line follows
        async with RawServer(_stream_handler(head + b'data: {"n": 1}\n\ndata: {"n": 2}\n')) as srv:
            assert await collect(HTTPClient(srv.url())) == [{"n": 1}, {"n": 2}]
        # chunked, properly terminated, no [DONE]: just ends
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\n') + b"0\r\n\r\n"
        async with RawServer(_stream_handler(raw, close=False)) as srv:
            assert await collect(HTTPClient(srv.url())) == [{"n": 1}]
        # Content-Length body, [DONE] as the last event with no blank line after it
        body = b'data: {"n": 1}\n\ndata: [DONE]\n'
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        async with RawServer(_stream_handler(reply, close=False)) as srv:
            assert await collect(HTTPClient(srv.url())) == [{"n": 1}]

    run(main, all_closed=True)


def test_sse_last_event_without_final_newline_is_not_dropped():
    """The client yields a last event that has no blank line after it (see the test above);
    the same event whose line has no newline either must not be silently dropped: in an
    OpenAI stream that last chunk carries the finish_reason and the usage."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"

    async def main():
        async with RawServer(_stream_handler(head + b'data: {"n": 1}\n\ndata: {"n": 2}')) as srv:
            got = await collect(HTTPClient(srv.url()))
            assert got == [{"n": 1}, {"n": 2}], f"the unterminated last event was dropped: got {got}"

    run(main)


def test_sse_stops_at_done_even_if_the_server_keeps_the_stream_open():
    async def main():
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\ndata: [DONE]\n\n')
        async with RawServer(_stream_handler(raw, stall_after=True)) as srv:
            client = HTTPClient(srv.url(), timeout_s=5)
            t0 = time.monotonic()
            assert await collect(client) == [{"n": 1}]
            assert time.monotonic() - t0 < 1
            await srv.wait_for(lambda: srv.eofs == 1)  # and the client closed the connection

    run(main, all_closed=True)


def test_sse_non_json_event_is_a_protocol_failure():
    async def main():
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\ndata: oops\n\n') + b"0\r\n\r\n"
        async with RawServer(_stream_handler(raw)) as srv:
            assert await collect_until_failure(HTTPClient(srv.url()), ProtocolFailure, "not JSON") == [{"n": 1}]

    run(main, all_closed=True)


def test_sse_cut_mid_chunk_is_a_protocol_failure():
    async def main():
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\n') + b"40\r\ndata: {\"n"
        async with RawServer(_stream_handler(raw)) as srv:
            assert await collect_until_failure(HTTPClient(srv.url()), ProtocolFailure, "cut off") == [{"n": 1}]

    run(main, all_closed=True)


def test_sse_stall_between_events_is_a_timeout_failure():
    async def main():
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\n')
        async with RawServer(_stream_handler(raw, stall_after=True)) as srv:
            t0 = time.monotonic()
            got = await collect_until_failure(HTTPClient(srv.url(), timeout_s=0.3), TimeoutFailure)
            assert got == [{"n": 1}] and 0.25 <= time.monotonic() - t0 < 3
            await srv.wait_for(lambda: srv.eofs == 1)

    run(main, all_closed=True)


def test_sse_no_headers_is_a_timeout_failure():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await asyncio.Event().wait()

    async def main():
        async with RawServer(handler) as srv:
            t0 = time.monotonic()
            with pytest.raises(TimeoutFailure):
                await collect(HTTPClient(srv.url(), timeout_s=0.3))
            assert time.monotonic() - t0 < 3

    run(main, all_closed=True)


def test_stream_then_request_on_the_same_client():
    async def handler(conn: Conn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.headers["accept"] == "text/event-stream":
                await conn.send(chunked_head(content_type="text/event-stream")
                                + chunk('data: {"n": 1}\n\ndata: [DONE]\n\n') + b"0\r\n\r\n")
            else:
                await conn.send(echo(req))

    async def main():
        async with RawServer(handler) as srv:
            client = HTTPClient(srv.url())
            for _ in range(2):
                assert await collect(client) == [{"n": 1}]
                assert (await client.request_json("POST", "/x", {"a": 1}))["got"] == {"a": 1}
            assert len(srv.requests) == 4
            await client.aclose()

    run(main, all_closed=True)


def test_breaking_out_of_a_stream_closes_its_connection():
    async def main():
        raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\ndata: {"n": 2}\n\n')
        async with RawServer(_stream_handler(raw, stall_after=True)) as srv:
            client = HTTPClient(srv.url(), timeout_s=5)
            events = client.stream_events("/x", {})
            async for e in events:
                assert e == {"n": 1}
                break
            await events.aclose()
            await srv.wait_for(lambda: srv.eofs == 1)

    run(main, all_closed=True)


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
         "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return d / "c.pem", d / "k.pem"


def _server_ssl(cert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def test_https_with_a_trusted_self_signed_certificate(cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main():
        async with RawServer(answer_each(echo), ssl_ctx=_server_ssl(cert)) as srv:
            client = HTTPClient(srv.url("/v1", scheme="https"))
            for i in range(3):
                assert (await client.request_json("POST", "/x", {"i": i})) == {"got": {"i": i}, "path": "/v1/x"}
            raw = chunked_head(content_type="text/event-stream") + chunk('data: {"n": 1}\n\ndata: [DONE]\n\n')
            assert client.connections_opened == 1
            assert srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"
        async with RawServer(_stream_handler(raw + b"0\r\n\r\n"), ssl_ctx=_server_ssl(cert)) as srv:
            assert await collect(HTTPClient(srv.url(scheme="https"))) == [{"n": 1}]

    run(main)


def test_https_with_an_untrusted_certificate_is_a_connect_failure(cert, monkeypatch, tmp_path):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # no system CA could vouch for it anyway

    async def main():
        async with RawServer(answer_each(echo), ssl_ctx=_server_ssl(cert)) as srv:
            client = HTTPClient(srv.url(scheme="https"), timeout_s=5)
            with pytest.raises(ConnectFailure, match="(?i)certificate"):
                await client.request_json("POST", "/x", {})
            assert srv.requests == []

    run(main)


def test_plain_http_to_a_tls_server_fails_cleanly(cert):
    async def main():
        async with RawServer(answer_each(echo), ssl_ctx=_server_ssl(cert)) as srv:
            with pytest.raises(HTTPFailure):
                await HTTPClient(srv.url(), timeout_s=2).request_json("POST", "/x", {})

    run(main)
