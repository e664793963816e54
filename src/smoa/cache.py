"""A response cache: SQLite on disk, as a wrapper around any backend.

The key is the backend's identity (`describe()`: kind and endpoint or model file), the
model, the messages, the sampling settings and the JSON schema. Only calls whose answer
is meant to be reproducible are cached: temperature 0, or a seed the user chose (the
engine's own random per-proposer seeds do not count; see `Request.seed_given`).

On by default; off with `--no-cache`, `cache = false` in a config, or SMOA_NO_CACHE=1.
The file lives in the cache folder (SMOA_CACHE_DIR, else ~/.cache/smoa) as responses.sqlite3.
Cached completions come back with `cached=True`; the trace marks them and cost counts them
as zero tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .types import Completion, Request, StreamEvent

KEY_VERSION = 1


def cache_disabled_by_env() -> bool:
    return os.environ.get("SMOA_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def default_path() -> Path:
    from .roles import cache_dir

    return cache_dir() / "responses.sqlite3"


def cacheable(request: Request) -> bool:
    """Cache only what should come out the same: temperature 0 or a user-chosen seed."""
    s = request.settings
    if s.temperature is not None and s.temperature == 0:
        return True
    return s.seed is not None and request.seed_given


def request_key(backend_id: str, request: Request) -> str:
    payload = {
        "v": KEY_VERSION,
        "backend": backend_id,
        "model": request.model,
        "messages": [[m.get("role"), m.get("content")] for m in request.messages],
        "settings": request.settings.as_dict(),
        "json_schema": request.json_schema,
    }
    if request.tools:  # only when set: keys of requests without tools stay as they were
        payload["tools"] = [request.tools, request.tool_choice]
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A key -> Completion table in SQLite. Safe across threads and processes (WAL)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, completion TEXT NOT NULL, created REAL NOT NULL)"
        )
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT completion FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        try:
            data = json.loads(row[0])
            comp = Completion(**data)
        except (ValueError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        comp.cached = True
        comp.prompt_evaluated = 0  # nothing was evaluated for a cached answer
        return comp

    def put(self, key: str, completion: Completion) -> None:
        data = asdict(completion)
        data["cached"] = False
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, completion, created) VALUES (?, ?, ?)",
                (key, json.dumps(data, ensure_ascii=False), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "hits": self.hits, "misses": self.misses, "hit_rate": round(self.hit_rate, 4)}

    def close(self) -> None:
        with self._lock:
            self._db.close()


_shared: dict[str, ResponseCache] = {}
_shared_lock = threading.Lock()


def shared_cache(path: str | Path | None = None) -> ResponseCache:
    """One ResponseCache per file per process."""
    p = str(Path(path) if path is not None else default_path())
    with _shared_lock:
        c = _shared.get(p)
        if c is None:
            c = ResponseCache(p)
            _shared[p] = c
        return c


class CachedBackend(Backend):
    """Serves cacheable requests from a ResponseCache; everything else goes to `inner`."""

    def __init__(self, inner: Backend, cache: ResponseCache | None = None) -> None:
        self.inner = inner
        self.cache = cache if cache is not None else shared_cache()
        self.kind = inner.kind
        self.max_concurrency = inner.max_concurrency
        self._id = inner.describe()
        from .wrappers import _share_limit

        _share_limit(self, inner)  # pipelines wrap one shared backend each: one endpoint limit

    def __getattr__(self, name: str) -> Any:  # model paths, names, ... of the wrapped backend
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> str:
        return self._id

    async def complete(self, request: Request) -> Completion:
        if not cacheable(request):
            return await self.inner.complete(request)
        key = request_key(self._id, request)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        comp = await self.inner.complete(request)
        if comp.finish_reason != "error":
            self.cache.put(key, comp)
        return comp

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        if not cacheable(request):
            async for ev in self.inner.stream(request):
                yield ev
            return
        key = request_key(self._id, request)
        hit = self.cache.get(key)
        if hit is not None:
            yield StreamEvent(delta=hit.text)
            yield StreamEvent(completion=hit)
            return
        async for ev in self.inner.stream(request):
            if ev.completion is not None:
                self.cache.put(key, ev.completion)
            yield ev

    async def aclose(self) -> None:
        await self.inner.aclose()
