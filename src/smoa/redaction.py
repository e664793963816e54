"""Keep secrets out of everything smoa writes: traces, logs, reports and error messages.

Backends register the API keys they load (`register_secret`); `redact` replaces every
registered value, and anything shaped like a bearer token or a provider key, with
`[redacted]`. Error messages are redacted where they are made (`SmoaError`), traces where
they are serialized, CLI output where it is printed, and log records by `RedactingFilter`.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "[redacted]"

_secrets: set[str] = set()
_lock = threading.Lock()

# Shapes of credentials that an endpoint or SDK may echo back in an error.
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"\b(sk-)[A-Za-z0-9_\-]{16,}"),
    # keys in URLs and cookies (a page login: /traces?key=..., then a smoa_key=... cookie)
    re.compile(r"(?i)((?:[?&;]\s*|\b)(?:[\w-]*_)?(?:key|api[_-]?key|token|access_token)=)[^&;\s\"'#,)]+"),
)


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` removes it. Short values are ignored (false hits)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret and every key-shaped token masked."""
    if not isinstance(text, str) or not text:
        return text
    if _secrets:
        for s in sorted(_secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, MASK)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + MASK, text)
    return text


def redact_secrets(value: Any) -> Any:
    """Registered secrets masked in every string of a JSON-like value (patterns not applied:
    trace content is model text, where key-shaped words may be legitimate)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        for s in _secrets:
            if s in value:
                value = value.replace(s, MASK)
        return value
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _clean_record(record)
        return True


def _clean_record(record: logging.LogRecord) -> None:
    try:
        msg = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler
        return
    if redact(msg) == msg:
        return
    # redact the parts, so that formatters that read record.args (uvicorn's) still work
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
    try:
        still = record.getMessage()
    except Exception:
        still = msg
    if redact(still) != still:  # the secret spans the format and its arguments
        record.msg, record.args = redact(still), None


_installed = False


def install_log_redaction() -> None:
    """Mask secrets in every log record made in this process, whatever the logger
    (the SDK and httpx log from many child loggers, and filters are not inherited).
    A record factory runs only for records that a logger is enabled for. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _clean_record(record)
        return record

    logging.setLogRecordFactory(factory)
