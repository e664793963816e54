"""The openai backend's default HTTP client (aiohttp) against raw, scripted servers on 127.0.0.1.

Each test scripts the bytes a server sends (rawhttp.py) and checks what the backend makes
of them: answers, keep-alive, time-outs, malformed or cut replies, status errors with
their details (server-sent events: test_http_sse.py; TLS and proxies:
test_http_tls_proxy.py). Every test also fails if anything (session, connection, socket)
is left unclosed (rawhttp.run).
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import socket
import time
import warnings

import pytest
from rawhttp import (
    OK,
    Conn,
    RawServer,
    ThreadedServer,
    answer_each,
    backend,
    chunk,
    chunked,
    chunked_head,
    close_after,
    collect,
    completion,
    req,
    response,
    run,
)

from smoa import BackendError
from smoa.testing import free_port

pytestmark = pytest.mark.server


# -- answers and the request the server receives --------------------------------------


def test_request_line_headers_and_body():
    async def main():
        async with RawServer(answer_each(OK)) as srv:
            be = backend(srv, api_key="sk-test-123")
            out = await be.complete(req(temperature=0.0, max_tokens=9))
            assert (out.text, out.prompt_tokens, out.completion_tokens, out.finish_reason) == ("4", 7, 1, "stop")
            r = srv.requests[0]
            assert (r.method, r.target, r.version) == ("POST", "/v1/chat/completions", "HTTP/1.1")
            assert r.headers["host"] == f"127.0.0.1:{srv.port}"
            assert r.headers["content-type"] == "application/json"
            assert r.headers["accept"] == "application/json"
            assert r.headers["authorization"] == "Bearer sk-test-123"
            assert r.headers["user-agent"].startswith("smoa/")
            assert "gzip" in r.headers["accept-encoding"]  # compression: aiohttp's
            body = r.json()
            assert body["model"] == "m1" and body["max_tokens"] == 9 and body["temperature"] == 0.0
            assert body["messages"][0]["content"] == "What is 2+2? héllo, 世界 🙂"
            assert "héllo, 世界 🙂".encode() in r.body  # UTF-8, not \u escapes
            await be.aclose()

    run(main)


def test_trailing_slash_of_base_url():
    async def main():
        async with RawServer(answer_each(OK)) as srv:
            assert (await backend(srv.url("/api/v1/")).complete(req())).text == "4"
            assert srv.requests[0].target == "/api/v1/chat/completions"

    run(main)


def test_chunked_body_with_extensions_and_trailers():
    body = completion("hello").encode()
    reply = (chunked_head() + chunk(body[:10]) + chunk(body[10:30], ext=";x=y") + chunk(body[30:], ext=';n="v"')
             + b"0;last=1\r\nX-Trailer: t\r\n\r\n")

    async def main():
        async with RawServer(answer_each(reply)) as srv:
            be = backend(srv)
            for _ in range(3):  # the trailers were consumed: the next response parses cleanly
                assert (await be.complete(req())).text == "hello"
            assert srv.accepted == 1

    run(main)


def test_body_delimited_by_connection_close_is_read_and_not_reused():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        body = completion("part").encode()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body[:20])
        await asyncio.sleep(0.05)  # the body comes in two pieces; only the close ends it
        await conn.send(body[20:])
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv)
            for _ in range(2):
                assert (await be.complete(req())).text == "part"
            assert [len(c.requests) for c in srv.conns] == [1, 1]

    run(main)


def test_status_line_without_reason_and_gzip_body():
    gz = gzip.compress(completion("zipped").encode())
    reply = b"HTTP/1.1 200\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gz) + gz

    async def main():
        async with RawServer(answer_each(reply)) as srv:
            assert (await backend(srv).complete(req())).text == "zipped"

    run(main)


def test_100_continue_before_the_real_response():
    async def main():
        async with RawServer(answer_each(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as srv:
            be = backend(srv)
            for _ in range(2):  # framing intact after the interim answer
                assert (await be.complete(req())).text == "4"
            assert srv.accepted == 1

    run(main)


def test_204_no_content_is_malformed_at_once_not_a_wait_for_close():
    """A 204 never has a body (RFC 9112, 6.3): no waiting for the connection to close."""

    async def main():
        async with RawServer(answer_each(b"HTTP/1.1 204 No Content\r\n\r\n")) as srv:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="malformed response") as ei:
                await backend(srv, timeout_s=3).complete(req())
            assert not ei.value.timeout and time.monotonic() - t0 < 2

    run(main)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_named_not_followed(status):
    """A 3xx is one clear error for the call (issue 11): a POST sent on would come back as a
    GET elsewhere, or carry the key to another origin. The target is named without its query."""

    async def main():
        async with RawServer(answer_each(OK)) as other:
            moved = response(status, "", headers=[f"Location: {other.url()}/chat/completions?token=abc"], reason="Moved")
            async with RawServer(answer_each(moved)) as srv:
                with pytest.raises(BackendError, match=str(status)) as ei:
                    await backend(srv, api_key="sk-stays-home").complete(req())
                assert "token=abc" not in str(ei.value)
                assert len(srv.requests) == 1
            assert other.requests == []

    run(main)


# -- keep-alive and connection limits -------------------------------------------------


def test_sequential_calls_share_one_connection():
    async def main():
        async with RawServer(answer_each(OK)) as srv:
            be = backend(srv)
            for _ in range(10):
                await be.complete(req())
            assert srv.accepted == 1 and len(srv.conns[0].requests) == 10

    run(main)


def test_concurrent_calls_then_reuse_of_the_pool():
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(0.05)  # all 20 are in flight together
            await conn.send(OK)

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv)
            for _ in range(2):
                await asyncio.gather(*(be.complete(req()) for _ in range(20)))
            assert srv.accepted == 20 and len(srv.requests) == 40  # the second round reused them

    run(main)


def test_max_concurrency_bounds_the_connections():
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(0.02)
            await conn.send(OK)

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv, max_concurrency=3)
            await asyncio.gather(*(be.complete(req()) for _ in range(12)))
            assert srv.accepted == 3 and len(srv.requests) == 12

    run(main)


def test_connection_close_header_opens_a_new_connection_and_closes_the_old():
    async def main():
        # the server keeps each socket open: only the header says not to reuse it
        async with RawServer(answer_each(response(body=completion(), headers=["Connection: close"]))) as srv:
            be = backend(srv)
            for _ in range(3):
                await be.complete(req())
            assert [len(c.requests) for c in srv.conns] == [1, 1, 1]
            await srv.wait_for(lambda: srv.eofs == 3)  # and the client closed each one

    run(main)


def test_http10_response_is_reused_only_with_keep_alive():
    async def main():
        async with RawServer(answer_each(response(body=completion(), version="HTTP/1.0"))) as srv:
            be = backend(srv)
            for _ in range(2):
                await be.complete(req())
            assert [len(c.requests) for c in srv.conns] == [1, 1]
        reply = response(body=completion(), version="HTTP/1.0", headers=["Connection: Keep-Alive"])
        async with RawServer(answer_each(reply)) as srv:
            be = backend(srv)
            for _ in range(2):
                await be.complete(req())
            assert [len(c.requests) for c in srv.conns] == [2]

    run(main)


def test_idle_connection_closed_by_the_server_is_replaced():
    async def handler(conn: Conn) -> None:  # answers one request, then closes quietly
        await conn.read_request()
        await conn.send(OK)
        await asyncio.sleep(0.05)
        conn.close()

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv)
            for i in range(3):
                assert (await be.complete(req())).text == "4"
                await srv.wait_for(lambda i=i: srv.conns[i].writer.is_closing())
                await asyncio.sleep(0.05)  # the FIN reaches the client while its connection is idle
            assert [len(c.requests) for c in srv.conns] == [1, 1, 1]

    run(main)


def test_keep_alive_race_is_a_retryable_error_and_the_post_is_not_resent():
    """The server takes a request on a reused connection, then closes it unanswered. A POST
    is not resent behind the caller's back (RFC 9112, 9.3.1; aiohttp's rule): the error is
    retryable (the retry wrapper resends it, counted), and the next call gets a new connection."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(OK)
        if conn.index == 0:
            await conn.read_request()  # the second request arrives on the reused connection...
            conn.close()  # ...and is dropped unanswered
        else:
            while await conn.read_request() is not None:
                await conn.send(OK)

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv)
            await be.complete(req())
            with pytest.raises(BackendError, match="malformed response.*without answering") as ei:
                await be.complete(req())
            assert ei.value.retryable and not ei.value.timeout
            assert (await be.complete(req())).text == "4"
            assert [len(c.requests) for c in srv.conns] == [2, 1]

    run(main)


def test_fresh_connection_closed_without_answer_is_not_retried():
    async def main():
        async with RawServer(close_after(b"")) as srv:
            with pytest.raises(BackendError, match="malformed response.*without answering") as ei:
                await backend(srv).complete(req())
            assert ei.value.retryable and len(srv.requests) == 1 and srv.accepted == 1

    run(main)


def test_aclose_closes_idle_connections_and_the_backend_stays_usable():
    async def main():
        async with RawServer(answer_each(OK)) as srv:
            be = backend(srv)
            await asyncio.gather(*(be.complete(req()) for _ in range(3)))
            assert srv.accepted == 3 and srv.eofs == 0
            await be.aclose()
            await srv.wait_for(lambda: srv.eofs == 3)
            assert (await be.complete(req())).text == "4"  # a new session, a new connection
            assert srv.accepted == 4
            await be.aclose()

    run(main)


def test_each_event_loop_gets_its_own_session_closed_with_the_loop():
    """One backend under successive asyncio.run calls (the CLI and the eval harness do this):
    connections are reused within a loop, and a finished loop's are closed with it."""
    with ThreadedServer(answer_each(OK)) as srv:
        be = backend(srv)

        async def twice():
            for _ in range(2):
                assert (await be.complete(req())).text == "4"

        for i in range(3):
            run(twice)  # no aclose: the loop's end must close the session (run fails on a leak)
            deadline = time.monotonic() + 3
            while srv.eofs < i + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.eofs == i + 1, "the connection of a finished event loop was left open"
        assert [len(c.requests) for c in srv.conns] == [2, 2, 2]
        assert len(be._http._sessions) <= 1  # finished loops are not kept


def test_one_backend_used_from_event_loops_in_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadedServer(answer_each(OK)) as srv:
        be = backend(srv)

        async def three():
            return [(await be.complete(req())).text for _ in range(3)]

        with warnings.catch_warnings(record=True) as caught:  # one catcher: it is process-wide
            warnings.simplefilter("always", ResourceWarning)
            with ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda _: asyncio.run(three()), range(8)))
            gc.collect()
        assert got == [["4"] * 3] * 8 and len(srv.requests) == 24
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_tcp_nodelay_is_set():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(chunked_head())  # the body never comes: the connection stays in use
        await conn.read_request()

    async def main():
        async with RawServer(handler) as srv:
            transport = backend(srv)._http
            session = await transport._session()
            async with session.post(srv.url() + "/chat/completions", data=b"{}") as resp:
                sock = resp.connection.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await transport.aclose()

    run(main)


# -- time-outs and connect failures ---------------------------------------------------


def test_no_answer_is_a_timeout_and_the_connection_is_closed():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.read_request()  # no answer; returns when the client closes the connection

    async def main():
        async with RawServer(handler) as srv:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="no reply in time") as ei:
                await backend(srv, timeout_s=0.3).complete(req())
            assert ei.value.timeout and ei.value.retryable and 0.25 <= time.monotonic() - t0 < 3
            await srv.wait_for(lambda: srv.eofs == 1)  # the stuck connection was closed, not pooled

    run(main)


def test_body_that_stalls_midway_is_a_timeout():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n{\"a\":")
        await asyncio.Event().wait()

    async def main():
        async with RawServer(handler) as srv:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="no reply in time") as ei:
                await backend(srv, timeout_s=0.3).complete(req())
            assert ei.value.timeout and time.monotonic() - t0 < 3

    run(main)


def test_unreachable_endpoint_is_a_retryable_connect_error():
    async def main():
        be = backend(f"http://127.0.0.1:{free_port()}/v1", timeout_s=5)
        with pytest.raises(BackendError, match="cannot reach the endpoint.*refused") as ei:
            await be.complete(req())
        assert ei.value.retryable and ei.value.status_code is None and not ei.value.timeout
        with pytest.raises(BackendError, match="cannot reach the endpoint"):
            await collect(be)
        await be.aclose()

    run(main)


# -- status >= 400 --------------------------------------------------------------------


def test_rate_limit_carries_status_and_retry_after_and_keeps_the_connection():
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit", "code": None}})
    reply = response(429, body, headers=["Retry-After: 7", "X-Request-ID: abc"], reason="Too Many Requests")

    async def main():
        async with RawServer(answer_each(reply)) as srv:
            be = backend(srv)
            for _ in range(2):
                with pytest.raises(BackendError, match="answered 429: Rate limit reached") as ei:
                    await be.complete(req())
                assert ei.value.status_code == 429 and ei.value.retry_after == 7.0
            assert srv.accepted == 1  # the error body was read: the connection was reused

    run(main)


@pytest.mark.parametrize(("header", "seconds"), [
    ("Retry-After-Ms: 1500", 1.5),
    ("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past
    ("Retry-After: soon", None),
])
def test_retry_after_forms(header, seconds):
    async def main():
        async with RawServer(answer_each(response(503, "{}", headers=[header], reason="Busy"))) as srv:
            with pytest.raises(BackendError) as ei:
                await backend(srv).complete(req())
            assert ei.value.status_code == 503 and ei.value.retry_after == seconds

    run(main)


@pytest.mark.parametrize(("body", "message"), [
    ("upstream exploded\n", "upstream exploded"),
    ('{"detail": "Not Found"}', "Not Found"),
    ('{"error": "model not loaded"}', "model not loaded"),
    ('{"message": "bad input"}', "bad input"),
    ("x" * 1000, "x" * 300),
])
def test_status_error_message(body, message):
    async def main():
        async with RawServer(answer_each(response(500, body, reason="Internal Server Error"))) as srv:
            with pytest.raises(BackendError) as ei:
                await backend(srv).complete(req())
            assert ei.value.status_code == 500 and str(ei.value).endswith(f"answered 500: {message}")

    run(main)


def test_status_error_on_a_stream():
    reply = response(401, '{"error": {"message": "Invalid API key"}}', reason="Unauthorized")

    async def main():
        async with RawServer(answer_each(reply)) as srv:
            with pytest.raises(BackendError, match=r"refused the API key \(401\)") as ei:
                await collect(backend(srv))
            assert ei.value.status_code == 401

    run(main)


def test_context_length_refusal_is_an_input_error():
    reply = response(400, '{"error": {"message": "This model\'s maximum context length is 4096 tokens"}}')

    async def main():
        from smoa.types import InputError

        async with RawServer(answer_each(reply)) as srv:
            with pytest.raises(InputError, match="answered 400"):
                await backend(srv).complete(req())

    run(main)


# -- malformed replies ----------------------------------------------------------------


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.0\r\n\r\n",
    b"HTTP/1.1 OK 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",  # closed inside the headers
    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\": 1",  # short body
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",  # JSON, but no choices
    b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"[" * 100_000 + b"]" * 100_000,  # too deep
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\"",  # cut mid-chunk
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",  # no last chunk
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
], ids=["not-http", "bad-status", "eof-in-headers", "short-body", "not-json", "no-choices", "too-deep", "bad-length",
        "bad-chunk-size", "negative-chunk-size", "cut-mid-chunk", "no-last-chunk", "huge-header", "bad-gzip"])
def test_malformed_replies_are_retryable_malformed_response_errors(reply):
    async def main():
        async with RawServer(close_after(reply)) as srv:
            with pytest.raises(BackendError, match="malformed response") as ei:
                await backend(srv, timeout_s=5).complete(req())
            e = ei.value
            assert e.retryable and not e.timeout and e.status_code is None and "\n" not in str(e)
            assert len(srv.requests) == 1

    run(main)


def test_a_chunked_json_answer_keeps_the_connection():
    async def main():
        async with RawServer(answer_each(chunked(completion("x")[:15], completion("x")[15:]))) as srv:
            be = backend(srv)
            for _ in range(3):
                assert (await be.complete(req())).text == "x"
            assert srv.accepted == 1

    run(main)


def test_base_urls():
    from smoa.backends.aiohttp_transport import AiohttpTransport, InvalidURL

    assert AiohttpTransport("http://[::1]:8080/v1/")._url("/x").raw_host == "::1"
    assert str(AiohttpTransport("https://example.com/api/v1/")._url("/chat/completions")) == \
        "https://example.com/api/v1/chat/completions"
    for bad in ("ftp://x", "nonsense", "http://", "", "127.0.0.1:8000/v1"):
        with pytest.raises(InvalidURL):
            AiohttpTransport(bad)
