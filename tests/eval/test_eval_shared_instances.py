"""The eval runner shares raw backends between methods, never an agent's wrappers."""

import sys
from pathlib import Path

from smoa.eval.runner import run_eval
from smoa.eval.store import ResultsStore

sys.path.insert(0, str(Path(__file__).parents[1]))
from shared_backends import CONFIG, assert_judge_kept_its_own_backend, spare_calls  # noqa: E402


def test_a_proposers_fallback_never_reaches_the_judge_of_a_later_method(tmp_path, shared_data):
    cfg = tmp_path / "mix.toml"
    cfg.write_text(CONFIG)
    before = spare_calls()
    # moa is built first: its proposer 1 carries the fallback; smoa's judge comes after
    s = run_eval("gsm8k", "moa,smoa", data=shared_data, limit=2, out=tmp_path / "out", config=cfg,
                 n=3, k=2, max_rounds=1, progress=False)
    assert s["errors"] == 0
    with ResultsStore(tmp_path / "out") as store:
        rows = list(store.rows("gsm8k", "smoa", with_trace=True))
    assert len(rows) == 2
    for r in rows:
        assert_judge_kept_its_own_backend(r["trace"])
    assert spare_calls() == before
