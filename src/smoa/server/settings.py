"""Server options: defaults < the config file's [server] table < environment < command line.

    [server]
    api_key_env = "SMOA_API_KEY"    # clients must send "Authorization: Bearer $SMOA_API_KEY" when it is set
    max_in_flight = 4                # queries running at once; more wait in the queue
    max_queue = 64                   # queries waiting for a slot; more get 429 at once
    queue_timeout_s = 60             # a query waiting longer gets 429 (with Retry-After)
    cors_origins = ["https://app.example"]  # browser origins allowed to call (default: none)
    max_request_bytes = 1000000      # larger request bodies get 413
    save_traces = true               # false: keep traces in memory only
    trace_store = "~/traces.sqlite"  # default: see smoa.tracestore.default_path

Environment: SMOA_API_KEY, SMOA_MAX_IN_FLIGHT, SMOA_MAX_QUEUE, SMOA_MAX_REQUEST_BYTES,
SMOA_NO_TRACE_STORE, SMOA_TRACE_STORE.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import ConfigFile, _validation_message, load_config
from ..types import ConfigError


class ServerTable(BaseModel):
    """The optional [server] table of a config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_env: str | None = None
    max_in_flight: int | None = Field(None, ge=1)
    max_queue: int | None = Field(None, ge=0)
    queue_timeout_s: float | None = Field(None, ge=0)
    cors_origins: tuple[str, ...] | None = None
    max_request_bytes: int | None = Field(None, ge=1024)
    stream_hold_s: float | None = Field(None, ge=0)
    save_traces: bool | None = None
    trace_store: str | None = None


class ServerOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_key: str | None = None
    max_in_flight: int = Field(4, ge=1)
    max_queue: int = Field(64, ge=0)  # 0: no queue, 429 as soon as every slot is busy
    queue_timeout_s: float = Field(60.0, ge=0)
    cors_origins: tuple[str, ...] = ()  # "*" allows any origin (then without credentials)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    # A streamed reply starts when the first token is ready, so that a failure before it still
    # gets its own status code (502, 504...); past this many seconds the stream starts anyway
    # and sends keep-alive comments.
    stream_hold_s: float = Field(30.0, ge=0)
    save_traces: bool = True
    trace_store: str | None = None


def load_server_config(path: str | Path | None) -> tuple[ConfigFile | None, ServerTable]:
    """The config file, and its [server] table (which the pipeline config does not know)."""
    if path is None:
        return None, ServerTable()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return load_config(p), ServerTable()  # load_config words the error
    raw = data.pop("server", None)
    if raw is None:
        return load_config(p), ServerTable()
    try:
        table = ServerTable(**raw) if isinstance(raw, dict) else ServerTable.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, f"{p}: server")) from None
    if "pipelines" not in data and ("method" in data or "proposers" in data):
        top = {k: data.pop(k) for k in list(data) if k not in ("backends", "default")}
        data["pipelines"] = {"default": top}
        data.setdefault("default", "default")
    try:
        return ConfigFile(**data), table
    except ValidationError as e:
        raise ConfigError(_validation_message(e, str(p))) from None


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return None
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"{name}={v!r} is not a whole number") from None


def resolve_options(table: ServerTable | None = None, **cli: Any) -> ServerOptions:
    table = table or ServerTable()
    opts: dict[str, Any] = {}
    for k in ("max_in_flight", "max_queue", "queue_timeout_s", "cors_origins", "max_request_bytes", "stream_hold_s",
              "save_traces", "trace_store"):
        v = getattr(table, k)
        if v is not None:
            opts[k] = v
    key_env = table.api_key_env or "SMOA_API_KEY"
    key = os.environ.get(key_env) or (os.environ.get("SMOA_API_KEY") if key_env != "SMOA_API_KEY" else None)
    if table.api_key_env and not os.environ.get(table.api_key_env):
        raise ConfigError(
            f"server.api_key_env names {table.api_key_env}, which is not set: export it or remove api_key_env"
        )
    if key:
        opts["api_key"] = key
    for k, name in (("max_in_flight", "SMOA_MAX_IN_FLIGHT"), ("max_queue", "SMOA_MAX_QUEUE"),
                    ("max_request_bytes", "SMOA_MAX_REQUEST_BYTES")):
        v = _env_int(name)
        if v is not None:
            opts[k] = v
    if os.environ.get("SMOA_TRACE_STORE"):
        opts["trace_store"] = os.environ["SMOA_TRACE_STORE"]
    from ..tracestore import disabled_by_env

    if disabled_by_env():
        opts["save_traces"] = False
    opts.update({k: v for k, v in cli.items() if v is not None and v != ()})
    bad = [o for o in opts.get("cors_origins", ()) if o != "*" and not re.match(r"^https?://[^/\s]+$", o)]
    if bad:
        raise ConfigError(f"CORS origin {bad[0]!r} is not an origin: give scheme://host[:port] with no path, or *")
    try:
        return ServerOptions(**opts)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, "server options")) from None
