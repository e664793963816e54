"""The results store: one SQLite file per evaluation directory (OUT/results.sqlite).

One row per (benchmark, method, item_id), enforced by a UNIQUE constraint. A row is
written the moment its item finishes, in its own transaction, so a killed run loses at
most the items in flight. A finished row (no error) is never overwritten; a row that
ended in an error is replaced when a later run retries the item.

The file is opened in WAL mode, so `smoa report` can read while an eval is writing. New rows
sit in the `-wal` file beside it until SQLite checkpoints them into the main file, which by
default happens only after about 4 MB (hundreds of rows, hours of a local-model study) or
when the last connection closes. A process killed before then leaves the newest rows only in
the `-wal` file, and a copy of `results.sqlite` alone (a backup, a commit, a folder synced to
another machine) silently lacks them. So the store sets SQLite's own `wal_autocheckpoint` to
one page: every commit is followed by a PASSIVE checkpoint (it never waits for readers or
blocks them), and the main file holds every finished row. It costs about 0.8 ms per row
(one fsync), nothing against the model calls behind a row.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..types import SmoaError

STORE_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id              INTEGER PRIMARY KEY,
    benchmark       TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    item_id         TEXT    NOT NULL,
    item_index      INTEGER NOT NULL DEFAULT 0,
    answer          TEXT,
    score           REAL,
    correct         INTEGER,
    score_detail    TEXT,
    judge_verdict   TEXT,
    judge_tokens    INTEGER NOT NULL DEFAULT 0,
    tokens_by_stage TEXT    NOT NULL DEFAULT '{}',
    prompt_tokens   INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens    INTEGER NOT NULL DEFAULT 0,
    calls           INTEGER NOT NULL DEFAULT 0,
    call_errors     INTEGER NOT NULL DEFAULT 0,
    cached_calls    INTEGER NOT NULL DEFAULT 0,
    latency_s       REAL    NOT NULL DEFAULT 0,
    wall_s          REAL    NOT NULL DEFAULT 0,
    error           TEXT,
    trace           TEXT,
    run_id          TEXT    NOT NULL DEFAULT '',
    worker          TEXT    NOT NULL DEFAULT '',
    created_at      REAL    NOT NULL,
    UNIQUE (benchmark, method, item_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    benchmark  TEXT NOT NULL,
    methods    TEXT NOT NULL,
    settings   TEXT NOT NULL,
    summary    TEXT
);
CREATE TABLE IF NOT EXISTS setup (
    benchmark TEXT NOT NULL,
    method    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data      TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (benchmark, method, kind)
);
"""

# Columns written from a Row, in order (id and created_at are the store's).
_COLUMNS = (
    "benchmark", "method", "item_id", "item_index", "answer", "score", "correct", "score_detail",
    "judge_verdict", "judge_tokens", "tokens_by_stage", "prompt_tokens", "completion_tokens",
    "total_tokens", "calls", "call_errors", "cached_calls", "latency_s", "wall_s", "error", "trace", "run_id",
    "worker",
)
_JSON_COLUMNS = ("score_detail", "tokens_by_stage", "trace")
# What this smoa reads from each table (a file of another shape is refused, not misread).
_REQUIRED = {
    "results": (*_COLUMNS, "id", "created_at"),
    "runs": ("run_id", "started_at", "finished_at", "benchmark", "methods", "settings", "summary"),
    "setup": ("benchmark", "method", "kind", "data", "created_at"),
}
_MIGRATED = ("cached_calls",)  # added by _migrate to stores of an older smoa


@dataclass
class Row:
    """One finished (benchmark, method, item): what the runner produces and the store keeps."""

    benchmark: str
    method: str
    item_id: str
    item_index: int = 0
    answer: str | None = None
    score: float | None = None
    correct: bool | None = None
    score_detail: dict[str, Any] = field(default_factory=dict)
    judge_verdict: str | None = None
    judge_tokens: int = 0
    tokens_by_stage: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0
    call_errors: int = 0
    cached_calls: int = 0  # answered from the response cache (their tokens still count)
    latency_s: float = 0.0
    wall_s: float = 0.0
    error: str | None = None
    trace: dict[str, Any] | None = None
    run_id: str = ""
    worker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResultsStore:
    """SQLite results of one evaluation directory. Use as a context manager or call close()."""

    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        """Open (or create) the store. exclusive=True: this process is the folder's only eval
        (see `lock`); another eval already running there is one clear SmoaError."""
        p = Path(path)
        if p.is_dir() or p.suffix != ".sqlite":
            p = p / STORE_NAME
        self.path = p
        self._lock_fd: int | None = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SmoaError(f"cannot create the output folder {p.parent}: {e.strerror or type(e).__name__}: "
                            "give --out a folder you can write") from None
        if exclusive:
            self.lock()
        try:
            self.db = sqlite3.connect(str(p), timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            self.unlock()
            raise SmoaError(f"cannot open the results store {p}: {e}: give --out a folder you can write") from None
        try:
            self.db.row_factory = sqlite3.Row
            self._check_schema()  # before anything is written to the file
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint=1")  # see the module docstring
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise SmoaError(f"{p} is not a smoa results store ({e}): it was left as it is; move it away "
                            "or give another --out") from None

    def _migrate(self) -> None:
        """Add columns that a store written by an older smoa lacks (their defaults apply)."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        if "cached_calls" not in have:
            self.db.execute("ALTER TABLE results ADD COLUMN cached_calls INTEGER NOT NULL DEFAULT 0")

    def _check_schema(self) -> None:
        """A file of another program (other tables, or ours in another shape) is refused, not
        changed: this runs before the store writes anything."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables & set(_REQUIRED):
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:5])})")
        for table in sorted(tables & set(_REQUIRED)):
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in _REQUIRED[table] if c not in have and c not in _MIGRATED]
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise sqlite3.DatabaseError(f"its table {table!r} lacks the column(s) {', '.join(missing[:3])}{more}")

    # -- one eval per folder -----------------------------------------------------
    def lock(self) -> None:
        """Make this process the folder's only writer, until close().

        An flock on `results.sqlite.lock` (which holds the owner's pid): the kernel drops it
        when the owner exits, however it exits, so a lock is never stale. A second eval on
        the same folder would redo every item in flight; it is refused instead."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise SmoaError(f"cannot create the lock file {lock_path}: {e.strerror or type(e).__name__}: "
                            "give --out a folder you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise SmoaError(f"another smoa eval (pid {owner}) is writing to {self.path.parent}: wait for it to "
                            "finish (a rerun then resumes where it stopped), or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
        self.unlock()

    # -- writing ---------------------------------------------------------------
    def put(self, row: Row) -> bool:
        """Write one finished item at once. Returns False when a finished row was already
        there (it is kept: finished items are never redone or duplicated)."""
        values = []
        for c in _COLUMNS:
            v = getattr(row, c)
            if c in _JSON_COLUMNS and v is not None:
                v = json.dumps(v, ensure_ascii=False, default=str)
            elif c == "correct" and v is not None:
                v = int(bool(v))
            values.append(v)
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("benchmark", "method", "item_id"))
        cur = self.db.execute(
            f"INSERT INTO results ({cols}, created_at) VALUES ({marks}, ?) "
            f"ON CONFLICT (benchmark, method, item_id) DO UPDATE SET {update}, created_at = excluded.created_at "
            "WHERE results.error IS NOT NULL",
            (*values, time.time()),
        )
        return cur.rowcount > 0

    def put_many(self, rows: Iterable[Row]) -> int:
        return sum(1 for r in rows if self.put(r))

    def start_run(self, run_id: str, benchmark: str, methods: list[str], settings: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO runs (run_id, started_at, benchmark, methods, settings) VALUES (?, ?, ?, ?, ?)",
            (run_id, time.time(), benchmark, json.dumps(methods), json.dumps(settings, default=str)),
        )

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?",
            (time.time(), json.dumps(summary, default=str), run_id),
        )

    def put_setup(self, benchmark: str, method: str, kind: str, data: dict[str, Any]) -> None:
        """One-off work of a (benchmark, method), e.g. SMoA's role generation and its cost."""
        self.db.execute(
            "INSERT OR REPLACE INTO setup (benchmark, method, kind, data, created_at) VALUES (?, ?, ?, ?, ?)",
            (benchmark, method, kind, json.dumps(data, default=str), time.time()),
        )

    def get_setup(self, benchmark: str, method: str, kind: str) -> dict[str, Any] | None:
        r = self.db.execute(
            "SELECT data FROM setup WHERE benchmark = ? AND method = ? AND kind = ?", (benchmark, method, kind)
        ).fetchone()
        return json.loads(r["data"]) if r else None

    # -- reading ---------------------------------------------------------------
    def done(self, benchmark: str, method: str) -> set[str]:
        """Item ids finished without error (these are never run again)."""
        cur = self.db.execute(
            "SELECT item_id FROM results WHERE benchmark = ? AND method = ? AND error IS NULL", (benchmark, method)
        )
        return {r["item_id"] for r in cur}

    def with_error(self, benchmark: str, method: str, prefix: str) -> set[str]:
        """Item ids whose row has an answer and an error starting with `prefix`."""
        cur = self.db.execute(
            "SELECT item_id FROM results WHERE benchmark = ? AND method = ? AND answer IS NOT NULL "
            "AND substr(error, 1, ?) = ?",
            (benchmark, method, len(prefix), prefix),
        )
        return {r["item_id"] for r in cur}

    def count(self, benchmark: str | None = None, method: str | None = None, errors: bool | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM results WHERE 1=1", []
        if benchmark is not None:
            sql += " AND benchmark = ?"
            args.append(benchmark)
        if method is not None:
            sql += " AND method = ?"
            args.append(method)
        if errors is True:
            sql += " AND error IS NOT NULL"
        elif errors is False:
            sql += " AND error IS NULL"
        return int(self.db.execute(sql, args).fetchone()[0])

    def rows(self, benchmark: str | None = None, method: str | None = None, with_trace: bool = False) -> Iterator[dict[str, Any]]:
        cols = [c for c in _COLUMNS if with_trace or c != "trace"] + ["id", "created_at"]
        sql, args = f"SELECT {', '.join(cols)} FROM results WHERE 1=1", []
        if benchmark is not None:
            sql += " AND benchmark = ?"
            args.append(benchmark)
        if method is not None:
            sql += " AND method = ?"
            args.append(method)
        sql += " ORDER BY benchmark, method, item_index, item_id"
        for r in self.db.execute(sql, args):
            d = dict(r)
            for c in _JSON_COLUMNS:
                if c in d and d[c] is not None:
                    d[c] = json.loads(d[c])
            if d.get("correct") is not None:
                d["correct"] = bool(d["correct"])
            yield d

    def benchmarks(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT benchmark FROM results ORDER BY benchmark")]

    def methods(self, benchmark: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT method FROM results WHERE benchmark = ? ORDER BY method", (benchmark,))]

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for r in self.db.execute("SELECT * FROM runs ORDER BY started_at"):
            d = dict(r)
            d["methods"] = json.loads(d["methods"])
            d["settings"] = json.loads(d["settings"])
            d["summary"] = json.loads(d["summary"]) if d["summary"] else None
            out.append(d)
        return out
