"""Helpers for the call-graph tests of methods (tests/test_policy.py, tests/test_terse_verdict.py):
a pipeline on one scripted backend, one run, and the (stage, layer) list of its calls."""

import asyncio

from smoa import resolve
from smoa.engine import Engine
from smoa.testing import ScriptedBackend, mixture_responder


def make(method, responder=None, **kw):
    be = ScriptedBackend(responder=responder or mixture_responder())
    kw.setdefault("seed", 1)
    return be, resolve(method=method, instances={"local": be}, **kw)


def run(pipe, q="What is 2+2?"):
    return asyncio.run(Engine(pipe, role_cache=False).run(q))


def stages(trace):
    return [(c.stage, c.layer) for c in trace.calls]


def numbered(req):
    """A proposer reply whose answer is its sampling seed: distinct per proposer, same per seed."""
    return f"Working it out with seed {req.settings.seed}. The answer is {req.settings.seed}."
