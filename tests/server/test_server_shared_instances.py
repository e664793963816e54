"""The server shares raw backends between pipelines and requests, never an agent's wrappers."""

import sys
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from shared_backends import CONFIG, assert_judge_kept_its_own_backend, spare_calls  # noqa: E402

pytestmark = pytest.mark.server


def test_a_proposers_fallback_never_reaches_the_judge_across_requests(make_server):
    srv = make_server(config_text=CONFIG)
    cl = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=30)
    before = spare_calls()
    for q in ("What is 2 + 2?", "What is 3 + 3?"):  # each request builds the pipeline anew
        raw = cl.chat.completions.with_raw_response.create(model="mix", messages=[{"role": "user", "content": q}])
        assert raw.parse().choices[0].message.content == "final answer"
        tr = httpx.get(f"{srv.root}/traces/{raw.headers['x-smoa-trace-id']}.json", timeout=10)
        assert tr.status_code == 200, tr.text
        assert_judge_kept_its_own_backend(tr.json())
    assert spare_calls() == before  # proposer 1 never failed, and nobody else may use its fallback
