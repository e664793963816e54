"""Keep secrets out of everything smoa writes: traces, logs, reports and error messages.

Backends register the API keys they load (`register_secret`) and the passwords in their
URLs (`register_url`); `redact` replaces every registered value, every run of 8 or more
characters copied from one (an upstream that echoes part of a key), a URL's password, and
anything shaped like a bearer token or a provider key, with `[redacted]`. Error messages
are redacted where they are made (`SmoaError`) and before they are cut (`clip`), traces
where they are serialized, CLI output where it is printed, log records by
`RedactingFilter`, and final answers (streamed ones too, `StreamRedactor`) by the engine,
unless the user opts out with `SMOA_RAW_OUTPUT=1` (`raw_output`).

Our own code rather than a library: what must be masked is the keys this process loaded,
which only the process knows; the patterns are a second net for keys we were not told of.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "[redacted]"

_secrets: set[str] = set()
_grams: set[str] = set()  # every RUN-character window of every registered secret
_lock = threading.Lock()
RUN = 8  # a copy of this many characters of a secret is masked: it narrows a key's search too much

# Shapes of credentials that an endpoint or SDK may echo back in an error.
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"\b(sk-)[A-Za-z0-9_\-]{16,}"),
    # keys in URLs and cookies (a page login: /traces?key=..., then a smoa_key=... cookie)
    re.compile(r"(?i)((?:[?&;]\s*|\b)(?:[\w-]*_)?(?:key|api[_-]?key|token|access_token)=)[^&;\s\"'#,)]+"),
    # a password in a URL: scheme://user:PASSWORD@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)"),
)


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` removes it. Short values are ignored (false hits)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)
            _grams.update(value[i : i + RUN] for i in range(len(value) - RUN + 1))


def register_url(url: str | None) -> None:
    """Remember the password (and a long user name) of a URL's userinfo as secrets."""
    if not url or "@" not in url:
        return
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return
    for v in (password, user if user and len(user) >= 16 else None):
        if v:
            register_secret(v)
            register_secret(unquote(v))


def _spans(text: str) -> list[list[int]]:
    """[start, end) of every registered secret and every run of RUN or more characters
    copied from one, merged where they touch."""
    marks: list[tuple[int, int]] = []
    for sec in _secrets:
        i = text.find(sec)
        while i != -1:
            marks.append((i, i + len(sec)))
            i = text.find(sec, i + 1)
    if _grams:
        marks += [(i, i + RUN) for i in range(len(text) - RUN + 1) if text[i : i + RUN] in _grams]
    spans: list[list[int]] = []
    for x, y in sorted(marks):
        if spans and x <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], y)
        else:
            spans.append([x, y])
    return spans


def _mask_secrets(text: str) -> str:
    """Registered secrets, and every run of RUN or more characters copied from one, masked."""
    if not _secrets or len(text) < 6:
        return text
    for x, y in reversed(_spans(text)):
        text = text[:x] + MASK + text[y:]
    return text


def redact(text: str) -> str:
    """`text` with every registered secret (and copied part of one) and every key-shaped
    token masked."""
    if not isinstance(text, str) or not text:
        return text
    if _secrets:
        text = _mask_secrets(text)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + MASK, text)
    return text


def clip(text: str, limit: int = 300) -> str:
    """Redact, then cut: a secret cut in half before masking would leak its first half."""
    return redact(text)[:limit]


def raw_output() -> bool:
    """The user's opt-out (SMOA_RAW_OUTPUT=1): final answers keep secrets a model wrote."""
    import os

    return os.environ.get("SMOA_RAW_OUTPUT", "").strip().lower() in ("1", "true", "yes")


def redact_output(text: str) -> str:
    """A final answer with the process's secrets masked (patterns not applied: model text
    may hold key-shaped words legitimately), unless the user opted out."""
    if not _secrets or raw_output() or not isinstance(text, str):
        return text
    return _mask_secrets(text)


class StreamRedactor:
    """Masks secrets in a stream of text pieces, across piece boundaries: holds back the
    last characters that could still be the start of a secret or of a copied run."""

    def __init__(self) -> None:
        self.buf = ""

    def _hold(self) -> int:
        return max((len(s) for s in _secrets), default=0) + RUN

    def feed(self, piece: str) -> str:
        if not _secrets or raw_output():
            out, self.buf = self.buf + piece, ""
            return out
        self.buf += piece
        cut = len(self.buf) - self._hold()
        if cut <= 0:
            return ""
        for x, y in _spans(self.buf):
            if x < cut < y:  # a secret (or a copied run) straddles the cut: hold all of it
                cut = x
                break
        out, self.buf = _mask_secrets(self.buf[:cut]), self.buf[cut:]
        return out

    def flush(self) -> str:
        out, self.buf = _mask_secrets(self.buf) if not raw_output() else self.buf, ""
        return out


def redact_secrets(value: Any) -> Any:
    """Registered secrets masked in every string of a JSON-like value (patterns not applied:
    trace content is model text, where key-shaped words may be legitimate)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return _mask_secrets(value)
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
