"""smoa: Sparse Mixture-of-Agents.

    >>> import smoa
    >>> result = smoa.run_sync("What is 12 * 7?", method="smoa")  # doctest: +SKIP
    >>> print(result.answer, result.cost["total"])                 # doctest: +SKIP
"""

from .api import run, run_sync
from .config import METHODS, Agent, Pipeline, PipelineSpec, load_config, register_backend, resolve
from .engine import Engine, Result
from .trace import Trace
from .types import BackendError, Completion, ConfigError, Request, Settings, SmoaError

__all__ = [
    "METHODS", "Agent", "BackendError", "Completion", "ConfigError", "Engine", "Pipeline", "PipelineSpec",
    "Request", "Result", "Settings", "SmoaError", "Trace", "load_config", "register_backend", "resolve",
    "run", "run_sync",
]
__version__ = "0.1.0"
