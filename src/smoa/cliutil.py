"""What every `smoa` command shares: one way to fail (a redacted line, a non-zero exit) and
saving a CLI query's trace. Standard library, click and smoa's core only: the subcommands
(eval, serve, trace, models) import it without pulling in one another."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click


def fail(msg: object, code: int = 2) -> NoReturn:
    """Print `smoa: error: <msg>` on one line, secrets masked, and exit with `code`."""
    from .redaction import redact

    line = " ".join(redact(str(msg)).split())  # one line, whatever the message held
    click.echo(f"smoa: error: {line}", err=True)
    sys.exit(code)


def save_cli_trace(trace: Any, enabled: bool = True) -> str | None:
    """Save a CLI query's trace unless opted out; never fails the command (returns the id or None)."""
    if not enabled:  # --no-store: not even the store's import (sqlite3)
        return None
    from .redaction import redact
    from .tracestore import open_store

    try:
        store = open_store(enabled=None if enabled else False)
        if store is None:
            return None
        store.save(trace.to_dict(), source="cli")
        return str(trace.id)
    except Exception as e:  # a trace store problem must not lose the answer
        click.echo(f"smoa: warning: trace not saved: {redact(str(e))}", err=True)
        return None
