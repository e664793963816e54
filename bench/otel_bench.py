"""What OpenTelemetry export costs per query (smoa.otel), on one scripted smoa trace.

    PYTHONPATH=src .venv/bin/python bench/otel_bench.py

Measures CPU time (process_time: every thread of the process) per exported query: with export
off (the check `smoa.run` makes), with spans made and batched to the SDK's in-memory
exporter, and sent over OTLP/HTTP (protobuf) to a receiver on 127.0.0.1 in this process.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

N = 2000


def main() -> None:
    os.environ["SMOA_CACHE_DIR"] = tempfile.mkdtemp()  # roles generated afresh: the role call is in the trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from smoa import otel, run_sync
    from smoa.testing import ScriptedBackend, mixture_responder

    be = ScriptedBackend(responder=mixture_responder(propose=lambda r: f"answer {r.settings.seed}"))
    tr = run_sync("What is 2+2?", "smoa", backends={"local": be}, n=3, k=2, max_rounds=2, seed=1).trace
    spans = len(tr.calls) + 1

    def per_query(flush_every: int | None = None) -> float:
        t = time.process_time()
        for i in range(N):
            otel.record(tr)
            if flush_every and i % flush_every == flush_every - 1:
                otel.flush(60_000)  # the SDK queue holds 2048 spans: a burst of N queries would overflow it
        otel.flush(60_000)
        return (time.process_time() - t) / N

    off = per_query()
    exp = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exp))
    otel.instrument(tracer_provider=tp)
    mem = per_query(flush_every=100)
    assert len(exp.get_finished_spans()) == N * spans

    got: list[int] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            got.append(len(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    otel.instrument(endpoint=f"http://127.0.0.1:{srv.server_address[1]}/v1/traces")
    http = per_query(flush_every=100)
    otel.uninstrument()
    srv.shutdown()
    print(f"one smoa query (n=3, k=2, 2 rounds): {len(tr.calls)} calls, {spans} spans; {N} exports each")
    print(f"export off:                    {off * 1e6:8.1f} us CPU per query")
    print(f"spans to the in-memory exporter: {mem * 1e3:6.3f} ms CPU per query ({mem / spans * 1e6:.0f} us per span)")
    print(f"OTLP/HTTP to 127.0.0.1:          {http * 1e3:6.3f} ms CPU per query (receiver included), "
          f"{sum(got) / N:.0f} bytes per query in {len(got)} requests")


if __name__ == "__main__":
    main()
