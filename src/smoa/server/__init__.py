"""smoa as an OpenAI-compatible model: `smoa serve`, or `create_app()` in any ASGI server.

Needs the `server` extra (fastapi, uvicorn): `pip install 'smoa[server]'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import ConfigError


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the server needs the 'server' extra ({e.name} is missing): pip install 'smoa[server]'") from None


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See `smoa.server.app.create_app`."""
    _require()
    from .app import create_app as _create

    return _create(*args, **kwargs)


def build(config_path: str | Path | None = None, **cli: Any) -> tuple[Any, Any]:
    """The app and its options from a config file, the environment and command-line values."""
    _require()
    from .app import create_app as _create
    from .settings import load_server_config, resolve_options

    cfg, table = load_server_config(config_path)
    options = resolve_options(table, **cli)
    return _create(cfg, options), options


def serve(config_path: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          shutdown_grace_s: float = 10.0, **cli: Any) -> None:
    """Run the server until SIGTERM/SIGINT. Then uvicorn stops accepting connections and
    waits up to `shutdown_grace_s` for running requests; past that it cancels them (their
    partial traces are saved), the app's shutdown stops embedded-model decodes at their
    next token, and the process exits 0."""
    import uvicorn

    app, options = build(config_path, **cli)
    app.state.abort_decodes_on_shutdown = True  # this process ends with the server (see app.lifespan)
    state = app.state.smoa
    print(f"smoa: serving {', '.join(state.pipelines.available)} on http://{host}:{port}/v1", flush=True)
    print(f"smoa: traces at http://{host}:{port}/traces (store: {state.store.describe()})", flush=True)
    if options.api_key:
        print("smoa: clients must send the API key (Authorization: Bearer ...)", flush=True)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        print(f"smoa: warning: listening on {host} with no API key: set SMOA_API_KEY", flush=True)
    import signal

    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler
    # lets that end the process normally (exit 0) instead of by the signal (or a
    # KeyboardInterrupt traceback)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30,
                timeout_graceful_shutdown=shutdown_grace_s)  # type: ignore[arg-type]  # seconds; uvicorn waits with wait_for


__all__ = ["build", "create_app", "serve"]
