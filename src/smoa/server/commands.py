"""`smoa serve` and `smoa trace ...`: registered on the main CLI by `register(main)`."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import Any

import click

from ..cliutil import fail as _fail
from ..cliutil import save_cli_trace  # noqa: F401 (its old home)
from ..types import SmoaError


@click.command()
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False, path_type=Path), help="TOML config: backends, pipelines, and an optional [server] table.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--max-in-flight", type=int, help="Queries running at once; more wait in the queue (default 4).")
@click.option("--max-queue", type=int, help="Queries waiting for a slot; more get 429 with Retry-After (default 64; 0: no queue).")
@click.option("--queue-timeout-s", type=float, help="Longest wait in the queue before a 429 (default 60).")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Let browser apps on this origin call the API (repeatable; * for any). Default: none.")
@click.option("--max-request-bytes", type=int, help="Largest request body; larger get 413 (default 1000000).")
@click.option("--shutdown-grace-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="On SIGTERM/Ctrl-C: stop accepting, let running queries finish this long, then cancel the rest "
                   "(their partial traces are saved) and exit 0.")
@click.option("--no-store", is_flag=True, help="Keep traces in memory only (also: SMOA_NO_TRACE_STORE=1).")
@click.option("--trace-store", type=click.Path(dir_okay=False), help="SQLite file for traces (default: $SMOA_HOME/traces.sqlite or ~/.local/share/smoa/traces.sqlite).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--otel", is_flag=True, help="Export every query's trace as OpenTelemetry spans over OTLP/HTTP "
              "(also: SMOA_OTEL=1 or OTEL_EXPORTER_OTLP_ENDPOINT; needs pip install 'smoa[otel]').")
def serve(config: Path | None, host: str, port: int, max_in_flight: int | None, max_queue: int | None,
          queue_timeout_s: float | None, cors_origins: tuple[str, ...], max_request_bytes: int | None,
          shutdown_grace_s: float, no_store: bool, trace_store: str | None, log_level: str, otel: bool) -> None:
    """Serve the pipelines as an OpenAI-compatible API (/v1) with a trace viewer (/traces).

    Each pipeline is a model: the presets (single, moa, smoa, mad, self-moa) and those in
    the config. Set SMOA_API_KEY to require 'Authorization: Bearer <key>'.
    """
    from .. import otel as otel_mod
    from . import serve as run_server

    try:
        if config is not None:
            from ..config import load_config

            load_config(config)  # a bad file is one clear line before anything starts
        check_port(host, port)  # before "serving" is printed
        if otel_mod.cli_setup(otel):
            click.echo("smoa: exporting traces as OpenTelemetry spans (OTLP/HTTP)")
        run_server(
            config, host=host, port=port, log_level=log_level, shutdown_grace_s=shutdown_grace_s, max_in_flight=max_in_flight,
            max_queue=max_queue, queue_timeout_s=queue_timeout_s, cors_origins=cors_origins or None,
            max_request_bytes=max_request_bytes, save_traces=False if no_store else None, trace_store=trace_store,
        )
    except SmoaError as e:
        _fail(str(e))


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range, or one that cannot be bound now (in use, privileged, not an
    address of this machine), with one line: uvicorn would wrap 99999 around to 34463, and
    report a busy port only after smoa printed that it was serving."""
    import asyncio
    import errno
    import socket

    if not 1 <= port <= 65535:
        raise SmoaError(f"--port {port} is out of range: give a port from 1 to 65535")

    async def probe() -> None:  # asyncio binds as uvicorn will (address family, SO_REUSEADDR)
        server = await asyncio.start_server(lambda r, w: None, host, port, reuse_address=True)
        server.close()
        await server.wait_closed()

    try:
        asyncio.run(probe())
    except socket.gaierror as e:
        raise SmoaError(f"cannot listen on {host!r}: {e.strerror}: give --host an address of this "
                        "machine, e.g. 127.0.0.1") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise SmoaError(f"port {port} on {host} is already in use: stop what listens there or give "
                            "another --port") from None
        if e.errno == errno.EACCES:
            raise SmoaError(f"cannot listen on port {port}: permission denied (ports below 1024 need "
                            "privileges): give another --port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise SmoaError(f"cannot listen on {host}: it is not an address of this machine: give --host "
                            "an address of this machine, e.g. 127.0.0.1") from None
        raise SmoaError(f"cannot listen on {host}:{port}: {e.strerror}") from None


@click.group()
def trace() -> None:
    """Look at saved traces: list them, or draw one as an HTML page."""


def _load_trace(source: str) -> dict[str, Any]:
    p = Path(source)
    if p.is_file() or source.endswith(".json") or "/" in source:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            _fail(f"trace file not found: {p}")
        except (OSError, UnicodeDecodeError) as e:
            _fail(f"cannot read {p}: {e}")
        except json.JSONDecodeError as e:
            _fail(f"{p} is not JSON: {e}")
        if isinstance(data, dict) and "trace" in data and "calls" not in data:
            data = data["trace"]  # the output of `smoa ask --json`
        if not isinstance(data, dict) or "calls" not in data or "id" not in data:
            _fail(f"{p} is not a smoa trace (write one with `smoa ask --trace FILE`)")
        return data
    from ..tracestore import open_store

    try:
        store = open_store(enabled=True)
        assert store is not None
        got = store.get(source)
    except SmoaError as e:
        _fail(str(e))
    if got is None:
        _fail(f"no trace {source!r} in {store.describe()}: give a trace JSON file or an id from `smoa trace list`")
    return got


@trace.command("view")
@click.argument("source")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write (default: next to FILE, or ./trace-ID.html).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
def trace_view(source: str, output: Path | None, open_browser: bool) -> None:
    """Write one trace (FILE.json, or an id from the trace store) as a self-contained HTML page."""
    from ..web import render_trace_page

    data = _load_trace(source)
    if output is None:
        p = Path(source)
        output = p.with_suffix(".html") if p.is_file() else Path(f"trace-{data['id'][:12]}.html")
    try:
        output.write_text(render_trace_page(data), encoding="utf-8")
    except OSError as e:
        _fail(f"cannot write {output}: {e.strerror}")
    click.echo(str(output))
    if open_browser:
        webbrowser.open(output.resolve().as_uri())


@trace.command("list")
@click.option("--limit", "-n", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def trace_list(limit: int, as_json: bool) -> None:
    """Recent queries in the trace store, newest first."""
    import datetime as dt

    from ..tracestore import open_store

    if limit < 1:
        _fail(f"-n/--limit {limit}: give the number of traces to list, at least 1")
    try:
        store = open_store(enabled=True)
        assert store is not None
        rows = store.recent(limit)
    except SmoaError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no traces in {store.describe()}", err=True)
        return
    for r in rows:
        when = dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        status = "FAILED " if r["error"] else ""
        click.echo(f"{r['id'][:12]}  {when}  {r['method']:<8} {r['total_tokens']:>7} tok {r['wall_s']:>7.1f} s  {status}{r['query'][:60]}")


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(trace)
