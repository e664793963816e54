"""Where traces go: one SQLite file, so past queries can be listed and looked at later.

    store = open_store()            # None when the user opted out (SMOA_NO_TRACE_STORE=1)
    store.save(trace_dict)
    store.recent(limit=50)          # summaries, newest first
    store.get(trace_id)             # the whole trace as a dict

The default file is `$SMOA_TRACE_STORE`, else `$SMOA_HOME/traces.sqlite`, else
`$XDG_DATA_HOME/smoa/traces.sqlite` (`~/.local/share/smoa/traces.sqlite`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from .types import SmoaError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    pipeline TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    answer TEXT NOT NULL DEFAULT '',
    error TEXT,
    wall_s REAL NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_time ON traces (created_at DESC);
"""

_PREVIEW = 240
SUMMARY_FIELDS = (
    "id", "created_at", "source", "method", "pipeline", "query", "answer", "error", "wall_s",
    "calls", "prompt_tokens", "completion_tokens", "total_tokens",
)


def disabled_by_env() -> bool:
    return os.environ.get("SMOA_NO_TRACE_STORE", "").strip().lower() not in ("", "0", "false", "no")


def default_path() -> Path:
    explicit = os.environ.get("SMOA_TRACE_STORE")
    if explicit:
        return Path(os.path.expanduser(explicit))
    home = os.environ.get("SMOA_HOME")
    if home:
        return Path(os.path.expanduser(home)) / "traces.sqlite"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "smoa" / "traces.sqlite"


def summarize(trace: dict[str, Any], source: str = "") -> dict[str, Any]:
    """The row shown in lists: time, method, tokens, latency, previews."""
    total = (trace.get("cost") or {}).get("total") or {}
    query = trace.get("query") or []
    last_user = next((m.get("content", "") for m in reversed(query) if m.get("role") == "user"), "")
    return {
        "id": trace["id"],
        "created_at": float(trace.get("created_at") or 0.0),
        "source": source,
        "method": trace.get("method") or "",
        "pipeline": trace.get("pipeline") or "",
        "query": _preview(last_user),
        "answer": _preview(trace.get("answer") or ""),
        "error": trace.get("error"),
        "wall_s": float(trace.get("wall_s") or 0.0),
        "calls": len(trace.get("calls") or []),
        "prompt_tokens": int(total.get("prompt_tokens", 0)),
        "completion_tokens": int(total.get("completion_tokens", 0)),
        "total_tokens": int(total.get("total_tokens", 0)),
    }


def _preview(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= _PREVIEW else s[: _PREVIEW - 1] + "…"


class Store(Protocol):
    def save(self, trace: dict[str, Any], source: str = "") -> None: ...
    def get(self, trace_id: str) -> dict[str, Any] | None: ...
    def recent(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...
    def count(self) -> int: ...
    def describe(self) -> str: ...


def _check_schema(db: sqlite3.Connection) -> None:
    """A file with other tables, or a `traces` table of another shape, is not ours."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and "traces" not in tables:
        raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:5])})")
    if "traces" in tables:
        have = {r[1] for r in db.execute("PRAGMA table_info(traces)")}
        missing = [c for c in (*SUMMARY_FIELDS, "data") if c not in have]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise sqlite3.DatabaseError(f"its table 'traces' lacks the column(s) {', '.join(missing[:3])}{more}")


_SQLITE_MAX = 2**63 - 1  # LIMIT and OFFSET are 64-bit in SQLite: a larger count means "all"


class TraceStore:
    """Traces in one SQLite file. Safe to share between threads; each call opens its own connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10)
            try:
                _check_schema(db)  # before anything is written: another program's file is left alone
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise SmoaError(
                f"{self.path} is not a smoa trace store ({e}): it was left as it is; move it away, or set "
                "SMOA_TRACE_STORE to another file or SMOA_NO_TRACE_STORE=1"
            ) from None
        except (OSError, sqlite3.Error) as e:
            raise SmoaError(
                f"cannot open the trace store {self.path}: {e}: set SMOA_TRACE_STORE to a writable file "
                "or SMOA_NO_TRACE_STORE=1"
            ) from None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.row_factory = sqlite3.Row
        return db

    def describe(self) -> str:
        return str(self.path)

    def save(self, trace: dict[str, Any], source: str = "") -> None:
        row = summarize(trace, source)
        row["data"] = json.dumps(trace, ensure_ascii=False)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            db = self._connect()
            try:
                with db:  # commits
                    db.execute(f"INSERT OR REPLACE INTO traces ({cols}) VALUES ({marks})", tuple(row.values()))
            finally:
                db.close()

    def get(self, trace_id: str) -> dict[str, Any] | None:
        db = self._connect()
        try:
            r = db.execute("SELECT data FROM traces WHERE id = ?", (trace_id,)).fetchone()
            if r is None and len(trace_id) >= 6:  # a unique prefix is enough, as with git
                rows = db.execute(
                    "SELECT data FROM traces WHERE id LIKE ? LIMIT 2", (trace_id.replace("%", "") + "%",)
                ).fetchall()
                r = rows[0] if len(rows) == 1 else None
        finally:
            db.close()
        return json.loads(r["data"]) if r is not None else None

    def recent(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        db = self._connect()
        try:
            rows = db.execute(
                f"SELECT {', '.join(SUMMARY_FIELDS)} FROM traces ORDER BY created_at DESC LIMIT ? OFFSET ?",
                (min(max(0, limit), _SQLITE_MAX), min(max(0, offset), _SQLITE_MAX)),
            ).fetchall()
        finally:
            db.close()
        return [dict(r) for r in rows]

    def count(self) -> int:
        db = self._connect()
        try:
            return int(db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])
        finally:
            db.close()


class MemoryStore:
    """The last `capacity` traces in memory: what the server keeps when the user opted out of the file."""

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory (last {self.capacity} traces, not saved)"

    def save(self, trace: dict[str, Any], source: str = "") -> None:
        with self._lock:
            self._items[trace["id"]] = (trace, source)
            self._items.move_to_end(trace["id"])
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, trace_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(trace_id)
        return item[0] if item else None

    def recent(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items.values())
        rows = [summarize(t, s) for t, s in items]
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return rows[offset : offset + limit]

    def count(self) -> int:
        return len(self._items)


def open_store(path: str | Path | None = None, enabled: bool | None = None) -> TraceStore | None:
    """The user's trace store, or None when opted out (enabled=False or SMOA_NO_TRACE_STORE=1)."""
    if enabled is False or (enabled is None and disabled_by_env()):
        return None
    return TraceStore(path or default_path())
