"""Where the work runs: in this process (asyncio), or as Ray tasks on a cluster.

Both hand every finished row to the driver's `on_row`, which writes it to the one results
store; so the store is the same whichever executor ran the work. Ray is an optional extra
(`pip install 'smoa[ray]'`) and is imported only when asked for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..backends.base import Backend
from ..types import ConfigError
from .store import Row
from .work import EvalSettings, run_work

Work = Sequence[tuple[int, Any, str]]
OnRow = Callable[[Row], Any]


class LocalExecutor:
    """asyncio in this process: all work under one semaphore (settings.concurrency)."""

    name = "local"

    async def run(
        self, settings: EvalSettings, work: Work, on_row: OnRow,
        instances: dict[str, Backend] | None = None, bench: Any | None = None, chunk_size: int | None = None,
    ) -> None:
        if work:
            await run_work(settings, work, on_row, instances=instances, bench=bench)


def chunk_work(work: Work, chunk_size: int) -> list[list[tuple[int, Any, str]]]:
    """Split work into chunks of about `chunk_size` items, keeping an item's methods together."""
    by_item: dict[str, list[tuple[int, Any, str]]] = {}
    for w in work:
        by_item.setdefault(w[1].id, []).append(w)
    chunks: list[list[tuple[int, Any, str]]] = []
    cur: list[tuple[int, Any, str]] = []
    n_items = 0
    for ws in by_item.values():
        cur.extend(ws)
        n_items += 1
        if n_items >= chunk_size:
            chunks.append(cur)
            cur, n_items = [], 0
    if cur:
        chunks.append(cur)
    return chunks


def _ray_chunk(settings: EvalSettings, chunk: list[tuple[int, Any, str]], instances: dict[str, Backend] | None) -> list[dict[str, Any]]:
    """One Ray task: run a chunk of items with asyncio in the worker and return the rows."""
    from .. import otel

    rows: list[dict[str, Any]] = []
    try:
        asyncio.run(run_work(settings, chunk, lambda r: rows.append(r.to_dict()), instances=instances))
    finally:
        otel.flush()  # a worker may be ended without exit handlers: send its spans now
    return rows


def _otel_env() -> dict[str, str]:
    """OpenTelemetry settings the workers need to export their items' spans (smoa.otel).
    Credentials (OTEL_EXPORTER_OTLP_HEADERS) are not sent: like the backends' API keys,
    they must be set on a remote cluster's machines."""
    keep = ("SMOA_OTEL", "SMOA_OTEL_CONTENT", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    return {k: os.environ[k] for k in keep if k in os.environ}


class RayExecutor:
    """Ray tasks, each running a chunk of items (all methods of an item in one task); the
    driver writes the rows. Connects to RAY_ADDRESS (or `address`) if given, else starts a
    local Ray instance. Each task runs up to settings.concurrency items at once."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus

    def _init(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'smoa[ray]'") from None
        if ray.is_initialized():
            return ray, False
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pp = os.environ.get("PYTHONPATH", "")
        env = {"PYTHONPATH": src + (os.pathsep + pp if pp else "")}
        env.update(_otel_env())
        kw: dict[str, Any] = {
            "include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
            "runtime_env": {"env_vars": env},
        }
        if self.address:
            kw["address"] = self.address
        elif self.num_cpus:
            kw["num_cpus"] = self.num_cpus
        try:
            ray.init(**kw)
        except Exception as e:
            raise ConfigError(f"Ray did not start: {type(e).__name__}: {e}") from None
        return ray, True

    async def run(
        self, settings: EvalSettings, work: Work, on_row: OnRow,
        instances: dict[str, Backend] | None = None, bench: Any | None = None, chunk_size: int | None = None,
    ) -> None:
        if not work:
            return
        ray, started = self._init()
        try:
            task = ray.remote(_ray_chunk)
            size = chunk_size or max(1, min(16, settings.concurrency))
            pending = [task.remote(settings, c, instances) for c in chunk_work(work, size)]
            while pending:
                ready, pending = await asyncio.to_thread(ray.wait, pending, num_returns=1)
                for ref in ready:
                    for d in ray.get(ref):
                        r = on_row(Row(**d))
                        if asyncio.iscoroutine(r):
                            await r
        finally:
            if started:
                ray.shutdown()


def get_executor(name: str | Any) -> Any:
    if not isinstance(name, str):
        return name
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor()
    raise ConfigError(f"unknown executor {name!r}: use local or ray")
