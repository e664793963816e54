"""The Python API: `run` (async) and `run_sync`, with the same power as `smoa ask`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from . import otel
from .backends.base import Backend
from .config import ConfigFile, Pipeline, resolve
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
        pipe = resolve(config, pipeline=pipeline, method=method, instances=backends, **overrides)
    try:
        result = await Engine(pipe, on_delta=on_delta, on_event=on_event).run(query)
    except SmoaError as e:
        if (tr := getattr(e, "trace", None)) is not None:
            otel.record(tr)
        raise
    otel.record(result.trace)  # a no-op unless OpenTelemetry export is on (smoa.otel)
    return result


def run_sync(query: str | list[Message], method: str | None = None, **kwargs: Any) -> Result:
    """`run` for code that has no event loop."""
    return asyncio.run(run(query, method, **kwargs))
