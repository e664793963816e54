"""Server-sent events through the openai backend's default HTTP client (aiohttp), against raw
scripted servers on 127.0.0.1 (rawhttp.py): events split at awkward places, data lines,
ends with and without [DONE], cut or stalled streams, time-outs per read, long lines."""

from __future__ import annotations

import asyncio
import time

import pytest
from rawhttp import (
    OK,
    SSE_CLOSE_HEAD,
    SSE_HEAD,
    Conn,
    RawServer,
    backend,
    chunk,
    collect,
    delta,
    deltas_until_failure,
    req,
    run,
    sse,
    stream_handler,
)

pytestmark = pytest.mark.server


def test_sse_events_split_at_awkward_places():
    e = "é"
    body = (
        f"data: {delta('A')}\n\n"
        ": a comment line\r\n"
        "event: message\r\n"
        f"data: {delta('caf' + e)}\r\n\r\n"
        "id: 7\n"
        'data: {"choices": [{"delta":\n'
        'data: {"content": "C"}}]}\n\n'  # one event on two data lines
        f"data:{delta('D')}\n\n"  # no space after the colon
        f"data: {delta(finish='stop', usage=(5, 4))}\n\n"
        "data: [DONE]\n\n"
        f"data: {delta('after done')}\n\n"
    ).encode()
    cut_in_e = body.index(e.encode()) + 1  # inside the two bytes of é
    cuts = [3, 14, 30, cut_in_e, body.index(b'{"content": "C"') + 3, len(body) - 30]
    assert cuts == sorted(cuts)
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    raw = SSE_HEAD + b"".join(chunk(p) for p in pieces) + b"0\r\n\r\n"

    async def main():
        async with RawServer(stream_handler(*[raw[i:i + 17] for i in range(0, len(raw), 17)])) as srv:
            deltas, final = await collect(backend(srv, api_key="k"))
            assert deltas == ["A", "café", "C", "D"]
            assert (final.text, final.completion_tokens, final.finish_reason) == ("AcaféCD", 4, "stop")
            r = srv.requests[0]
            assert (r.method, r.target) == ("POST", "/v1/chat/completions")
            assert r.headers["accept"] == "text/event-stream" and r.headers["authorization"] == "Bearer k"
            assert r.json()["stream"] is True

    run(main)


def test_sse_data_lines_are_joined_with_newlines():
    # a JSON string cannot hold a raw newline: the joined event is not JSON, which proves the
    # two lines were joined with "\n" (the error names the control character)
    body = b'data: {"choices": [{"delta": {"content": "line one\ndata: line two"}}]}\n\n'

    async def main():
        async with RawServer(stream_handler(SSE_CLOSE_HEAD + body)) as srv:
            await deltas_until_failure(backend(srv), "malformed response.*control character")

    run(main)


def test_sse_last_event_without_blank_line_or_final_newline_is_not_dropped():
    # the last event carries the finish_reason and the usage: dropping it loses the answer
    last = f"data: {delta(finish='stop', usage=(5, 1))}"

    async def main():
        for tail in (last + "\n", last):
            async with RawServer(stream_handler(SSE_CLOSE_HEAD + f"data: {delta('A')}\n\n{tail}".encode())) as srv:
                deltas, final = await collect(backend(srv))
                assert deltas == ["A"] and final.finish_reason == "stop"

    run(main)


def test_sse_clean_end_without_done_and_content_length_body():
    async def main():
        raw = SSE_HEAD + chunk(sse("A", "B", done=False)) + b"0\r\n\r\n"
        async with RawServer(stream_handler(raw, close=False)) as srv:
            assert (await collect(backend(srv)))[0] == ["A", "B"]
        body = sse("A").encode()
        reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        async with RawServer(stream_handler(reply, close=False)) as srv:
            assert (await collect(backend(srv)))[0] == ["A"]

    run(main)


def test_sse_stops_at_done_even_if_the_server_keeps_the_stream_open():
    async def main():
        async with RawServer(stream_handler(SSE_HEAD + chunk(sse("A")), stall_after=True)) as srv:
            t0 = time.monotonic()
            deltas, final = await collect(backend(srv, timeout_s=5))
            assert deltas == ["A"] and final.finish_reason == "stop" and time.monotonic() - t0 < 2
            await srv.wait_for(lambda: srv.eofs == 1)  # the unfinished connection was closed

    run(main)


def test_sse_without_finish_reason_is_an_incomplete_answer():
    async def main():
        async with RawServer(stream_handler(SSE_HEAD + chunk(f"data: {delta('A')}\n\n") + b"0\r\n\r\n")) as srv:
            got, e = await deltas_until_failure(backend(srv), "stream ended early")
            assert got == ["A"] and e.retryable

    run(main)


@pytest.mark.parametrize(("tail", "match"), [
    (chunk("data: oops\n\n") + b"0\r\n\r\n", "malformed response.*not JSON"),
    (b"40\r\ndata: {\"n", "malformed response.*cut off"),
    (chunk('data: {"error": {"message": "overloaded"}}\n\n') + b"0\r\n\r\n", "error mid-stream: overloaded"),
], ids=["non-json-event", "cut-mid-chunk", "error-event"])
def test_sse_failures_after_some_events(tail, match):
    async def main():
        async with RawServer(stream_handler(SSE_HEAD + chunk(f"data: {delta('A')}\n\n") + tail)) as srv:
            got, e = await deltas_until_failure(backend(srv), match)
            assert got == ["A"] and e.retryable

    run(main)


def test_sse_stall_between_events_is_a_timeout():
    async def main():
        async with RawServer(stream_handler(SSE_HEAD + chunk(f"data: {delta('A')}\n\n"), stall_after=True)) as srv:
            t0 = time.monotonic()
            got, e = await deltas_until_failure(backend(srv, timeout_s=0.3), "no reply in time")
            assert got == ["A"] and e.timeout and 0.25 <= time.monotonic() - t0 < 3
            await srv.wait_for(lambda: srv.eofs == 1)

    run(main)


def test_sse_no_headers_is_a_timeout():
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await asyncio.Event().wait()

    async def main():
        async with RawServer(handler) as srv:
            _, e = await deltas_until_failure(backend(srv, timeout_s=0.3), "no reply in time")
            assert e.timeout

    run(main)


def test_sse_time_out_is_per_read_not_for_the_whole_stream():
    pieces = [chunk(f"data: {delta(c)}\n\n") for c in "ABCDEF"] + [chunk(sse()), b"0\r\n\r\n"]

    async def main():  # 7 pieces 0.15 s apart: about 1 s in all, each gap under the 0.5 s time-out
        async with RawServer(stream_handler(SSE_HEAD, *pieces, gap_s=0.15)) as srv:
            t0 = time.monotonic()
            deltas, final = await collect(backend(srv, timeout_s=0.5))
            assert deltas == list("ABCDEF") and final.finish_reason == "stop" and time.monotonic() - t0 > 0.5

    run(main)


def test_sse_long_event_line():
    big = "z" * 300_000  # one event line of 300 kB (a whole answer in one chunk)

    async def main():
        async with RawServer(stream_handler(SSE_HEAD + chunk(sse(big)) + b"0\r\n\r\n")) as srv:
            deltas, final = await collect(backend(srv))
            assert deltas == [big] and final.text == big

    run(main)


def test_sse_line_over_the_limit_is_a_clean_malformed_response():
    from smoa.backends.aiohttp_transport import READ_BUFSIZE

    huge = "data: " + "z" * (3 * READ_BUFSIZE)  # no newline for more than the reader may hold

    async def main():
        async with RawServer(stream_handler(SSE_CLOSE_HEAD + huge.encode())) as srv:
            _, e = await deltas_until_failure(backend(srv), "malformed response")
            assert e.retryable and not e.timeout

    run(main)


def test_stream_then_complete_on_the_same_connection():
    async def handler(conn: Conn) -> None:
        while (r := await conn.read_request()) is not None:
            if r.headers["accept"] == "text/event-stream":
                await conn.send(SSE_HEAD + chunk(sse("A")) + b"0\r\n\r\n")
            else:
                await conn.send(OK)

    async def main():
        async with RawServer(handler) as srv:
            be = backend(srv)
            for _ in range(2):
                assert (await collect(be))[0] == ["A"]
                assert (await be.complete(req())).text == "4"
            assert len(srv.requests) == 4 and srv.accepted == 1  # a stream read to its end is reused

    run(main)


def test_breaking_out_of_a_stream_closes_its_connection():
    async def main():
        raw = SSE_HEAD + chunk(f"data: {delta('A')}\n\ndata: {delta('B')}\n\n")
        async with RawServer(stream_handler(raw, stall_after=True)) as srv:
            events = backend(srv, timeout_s=5).stream(req())
            async for ev in events:
                assert ev.delta == "A"
                break
            await events.aclose()
            await srv.wait_for(lambda: srv.eofs == 1)

    run(main)
