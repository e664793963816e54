"""Role play: r_i = LLM(D, T), generated once per (D, T, n, generator) and cached on disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import weakref
from pathlib import Path

from .prompting import _load

# Used only to fill in when the generator returns fewer distinct roles than needed
# (recorded in the trace as a fallback).
FALLBACK_ROLES = (
    "You are a careful research scientist who checks every claim against evidence and states uncertainty plainly.",
    "You are a pragmatic senior engineer who prefers simple, concrete, step-by-step solutions.",
    "You are a patient teacher who explains ideas so a beginner can follow and avoids jargon.",
    "You are a sceptical editor who hunts for errors, gaps and unstated assumptions before answering.",
    "You are a mathematician who works through quantities exactly and double-checks each calculation.",
    "You are a product-minded analyst who weighs trade-offs and focuses on what the user actually needs.",
    "You are a historian who places questions in context and is precise about facts and dates.",
    "You are an ethicist who considers fairness and harm and answers without stereotypes.",
)


def cache_dir() -> Path:
    base = os.environ.get("SMOA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smoa"
    )
    return Path(base)


def roles_key(dataset: str, task: str, n: int, generator: str) -> str:
    h = hashlib.sha256()
    for part in (dataset, task, str(n), generator, _load("roles.j2")):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def load_cached(key: str) -> tuple[list[str], int] | None:
    """(roles, how many of them are built-in padding) from the disk cache, or None."""
    p = cache_dir() / "roles" / f"{key}.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    roles = data.get("roles") if isinstance(data, dict) else None
    padded = data.get("padded", 0) if isinstance(data, dict) else 0
    if isinstance(roles, list) and all(isinstance(r, str) for r in roles):
        return roles, padded if isinstance(padded, int) and 0 <= padded <= len(roles) else len(roles)
    return None


def store(key: str, roles: list[str], meta: dict) -> None:
    d = cache_dir() / "roles"
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"roles": roles, **meta}, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(d / f"{key}.json")
    except OSError:
        pass  # a cache that cannot be written is not an error


# Roles padded with built-in ones are written to disk like any others, marked with how many
# were padded (a later process neither asks again nor takes them for generated ones); this
# process also keeps them in memory, for a cache folder that cannot be written.
_session: dict[tuple[str, str], tuple[list[str], int]] = {}
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def remember(key: str, roles: list[str], added: int) -> None:
    _session[(str(cache_dir()), key)] = (list(roles), added)


def recalled(key: str) -> tuple[list[str], int] | None:
    return _session.get((str(cache_dir()), key))


def key_lock(key: str) -> asyncio.Lock:
    """One lock per key and event loop: queries that start together generate roles once."""
    locks = _locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(key, asyncio.Lock())


def fill_roles(roles: list[str], n: int) -> tuple[list[str], int]:
    """Pad to n roles with built-in ones not already used; returns (roles, how many were added)."""
    out = list(roles[:n])
    added = 0
    for r in FALLBACK_ROLES:
        if len(out) >= n:
            break
        if r not in out:
            out.append(r)
            added += 1
    i = 0
    while len(out) < n:  # more proposers than built-in roles
        out.append(f"{FALLBACK_ROLES[i % len(FALLBACK_ROLES)]} (perspective {i + 2})")
        added += 1
        i += 1
    return out, added
