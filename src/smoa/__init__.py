"""smoa: Sparse Mixture-of-Agents.

    >>> import smoa
    >>> result = smoa.run_sync("What is 12 * 7?", method="smoa")  # doctest: +SKIP
    >>> print(result.answer, result.cost["total"])                 # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from .api import run, run_sync
    from .config import (
        METHODS,
        Agent,
        Pipeline,
        PipelineSpec,
        load_config,
        register_backend,
        resolve,
    )
    from .engine import Engine, Result
    from .trace import Trace
    from .types import BackendError, Completion, ConfigError, Request, Settings, SmoaError

# Loaded on first use (PEP 562), so that `smoa --help` and other light commands do not pay
# for pydantic, the engine and the backends they never touch.
_LAZY = {
    "run": "api", "run_sync": "api",
    "METHODS": "config", "Agent": "config", "Pipeline": "config", "PipelineSpec": "config",
    "load_config": "config", "register_backend": "config", "resolve": "config",
    "Engine": "engine", "Result": "engine", "Trace": "trace",
    "BackendError": "types", "Completion": "types", "ConfigError": "types", "Request": "types",
    "Settings": "types", "SmoaError": "types",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'smoa' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "METHODS", "Agent", "BackendError", "Completion", "ConfigError", "Engine", "Pipeline", "PipelineSpec",
    "Request", "Result", "Settings", "SmoaError", "Trace", "load_config", "register_backend", "resolve",
    "run", "run_sync",
]
__version__ = "0.1.0"
