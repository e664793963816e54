"""The Python API: `run` (async) and `run_sync`, with the same power as `smoa ask`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .config import ConfigFile, Pipeline, resolve
from .engine import Callback, Engine, Result
from .types import Message


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
    return await Engine(pipe, on_delta=on_delta, on_event=on_event).run(query)


def run_sync(query: str | list[Message], method: str | None = None, **kwargs: Any) -> Result:
    """`run` for code that has no event loop."""
    return asyncio.run(run(query, method, **kwargs))
