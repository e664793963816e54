"""The Python API: `run` (async) and `run_sync`, with the same power as `smoa ask`.

`run(config=PATH)` reads and validates a config file once per process (keyed by its path and
its content, so an edited file is read again) and keeps one set of backends per file: every
query made through it shares their connections and `max_concurrency` limits, as a server
or an eval run does. HTTP sessions belong to the event loop that made them and close with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

from . import otel
from .backends.base import Backend
from .config import ConfigFile, Pipeline, load_config, read_config_bytes, resolve
from .engine import Callback, Engine, Result
from .types import Message, SmoaError


async def run(
    query: str | list[Message],
    method: str | None = None,
    *,
    config: str | Path | ConfigFile | None = None,
    pipeline: str | Pipeline | None = None,
    backends: dict[str, Backend] | None = None,
    on_delta: Callback | None = None,
    on_event: Callback | None = None,
    **overrides: Any,
) -> Result:
    """Answer `query` (a prompt or a chat history) with a method or a configured pipeline.

    overrides: n, k, max_rounds, seed, temperature, max_tokens, model, roles, dataset, task.
    `backends` maps backend names to ready instances (e.g. {"local": ScriptedBackend()}).
    """
    if isinstance(pipeline, Pipeline):
        pipe = pipeline
    else:
        pool = None
        if isinstance(config, str | Path):
            config, pool = _config_file(config)
        pipe = resolve(config, pipeline=pipeline, method=method, instances=backends, pool=pool, **overrides)
    try:
        result = await Engine(pipe, on_delta=on_delta, on_event=on_event).run(query)
    except SmoaError as e:
        if (tr := e.trace) is not None:
            otel.record(tr)
        raise
    otel.record(result.trace)  # a no-op unless OpenTelemetry export is on (smoa.otel)
    return result


def run_sync(query: str | list[Message], method: str | None = None, **kwargs: Any) -> Result:
    """`run` for code that has no event loop."""
    return asyncio.run(run(query, method, **kwargs))


_files: dict[tuple[str, str], tuple[ConfigFile, dict[str, Backend]]] = {}
_files_lock = threading.Lock()


def _config_file(path: str | Path) -> tuple[ConfigFile, dict[str, Backend]]:
    """The validated config of a file and its pool of raw backends, made once per content."""
    p = Path(path).expanduser()
    data = read_config_bytes(p)  # regular files under a size cap only: one clear error otherwise
    key = (str(p.resolve()), hashlib.sha256(data).hexdigest())
    with _files_lock:
        hit = _files.get(key)
    if hit is None:
        hit = (load_config(p), {})
        with _files_lock:
            hit = _files.setdefault(key, hit)
    return hit
