"""The layering rules of issue 13: what imports what, errors typed by class, a failed
query's trace on a declared attribute. Imports are checked in a fresh interpreter."""

import asyncio
import subprocess
import sys

import pytest

from smoa.config import resolve
from smoa.engine import Engine
from smoa.testing import ScriptedBackend
from smoa.trace import Trace
from smoa.types import BackendError, ConfigError, ContextLengthError, InputError, SmoaError


def _loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_cli_imports_neither_server_nor_eval_until_asked():
    assert _loaded_after("import smoa.cli", ("smoa.server", "smoa.eval", "smoa.models")) == []


def test_the_core_does_not_import_eval_or_server():
    assert _loaded_after("import smoa, smoa.engine, smoa.api, smoa.config", ("smoa.eval", "smoa.server")) == []


@pytest.mark.parametrize("first", ["smoa.eval.executors", "smoa.eval.work", "smoa.eval.runner"])
def test_eval_modules_import_in_any_order(first):
    # a cycle hidden by an import inside a function would break one of these orders
    got = _loaded_after(f"import {first}", ("smoa.eval.runner",))
    assert ("smoa.eval.runner" in got) == (first == "smoa.eval.runner")


def test_errors_carry_their_status_by_type():
    from smoa.server.errors import from_exception

    cases = [
        (SmoaError("bad"), 400, None, "invalid_request_error"),
        (InputError("empty prompt"), 400, "input_rejected", "invalid_request_error"),
        (ContextLengthError("too long"), 400, "context_length_exceeded", "invalid_request_error"),
        (BackendError("boom"), 502, "upstream_error", "upstream_error"),
        (BackendError("slow", timeout=True), 504, "upstream_timeout", "upstream_error"),
        (ConfigError("no backend"), 500, "config_error", "server_error"),
        (RuntimeError("bug"), 500, "internal_error", "server_error"),
    ]
    for err, status, code, type_ in cases:
        api = from_exception(err)
        assert (api.status, api.code, api.type) == (status, code, type_), err
    # the message does not decide: context-window words in an InputError do not change its code
    assert from_exception(InputError("over the context window")).code == "input_rejected"


def test_a_failed_query_error_carries_its_trace():
    def responder(req):
        raise BackendError("the endpoint answered 500: boom")

    pipe = resolve(method="single", instances={"local": ScriptedBackend(responder=responder)}, cache=False)
    with pytest.raises(SmoaError) as info:
        asyncio.run(Engine(pipe).run("What is 2 + 2?"))
    tr = info.value.trace
    assert isinstance(tr, Trace) and tr.error and tr.calls and tr.calls[0].error
    assert SmoaError("not from a query").trace is None
