"""The Ray executor gives the same results store as the local one (on a local Ray instance)."""

import os
from pathlib import Path

import pytest

from smoa.eval.executors import chunk_work
from smoa.eval.runner import run_eval
from smoa.eval.store import ResultsStore
from smoa.testing import ServerProcess

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    d = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (d / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {d}")
    return d


class _It:
    def __init__(self, i):
        self.id = f"x/{i}"


def test_chunks_keep_an_items_methods_together():
    work = [(i, _It(i), m) for i in range(5) for m in ("single", "moa")]
    chunks = chunk_work(work, 2)
    assert [len(c) for c in chunks] == [4, 4, 2]
    for c in chunks:
        ids = {w[1].id for w in c}
        assert all(sum(1 for w in c if w[1].id == i) == 2 for i in ids)


def comparable(out):
    """Everything but timings, process names and run ids."""
    keep = ("benchmark", "method", "item_id", "item_index", "answer", "score", "correct", "score_detail",
            "prompt_tokens", "completion_tokens", "total_tokens", "calls", "call_errors", "error")
    with ResultsStore(out) as st:
        rows = {}
        for r in st.rows(with_trace=True):
            d = {k: r[k] for k in keep}
            d["tokens_by_stage"] = {s: (v["calls"], v["prompt_tokens"], v["completion_tokens"]) for s, v in r["tokens_by_stage"].items()}
            d["calls_seen"] = [(c["stage"], c["layer"], c["agent"], c["response"]) for c in r["trace"]["calls"]]
            rows[(r["method"], r["item_id"])] = (d, r["worker"])
        setup = st.get_setup("gsm8k", "smoa", "roles")
    return rows, setup


@pytest.mark.server
def test_ray_executor_writes_the_same_store_as_local(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'smoa[ray]'")
    data = data_dir()
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
        cfg = tmp_path / "eval.toml"
        cfg.write_text(
            f'[backends.fake]\ntype = "openai"\nbase_url = "{srv.base_url}"\nmax_retries = 0\n\n'
            '[pipelines.eval]\nmethod = "smoa"\nn = 3\nk = 2\nagent = { backend = "fake", model = "m1" }\n'
        )
        kw = dict(data=data, limit=6, config=cfg, progress=False, concurrency=4)
        local = run_eval("gsm8k", "single,moa,smoa", out=tmp_path / "local", **kw)
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "src")}})
        except Exception as e:  # pragma: no cover - depends on the machine
            pytest.skip(f"Ray did not start on this machine: {type(e).__name__}: {e}")
        try:
            remote = run_eval("gsm8k", "single,moa,smoa", out=tmp_path / "ray", executor="ray", chunk_size=2, **kw)
        finally:
            ray.shutdown()
    assert local["written"] == remote["written"] == 18 and remote["errors"] == 0
    a, sa = comparable(tmp_path / "local")
    b, sb = comparable(tmp_path / "ray")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0], k
    assert sa["roles"] == sb["roles"]
    # the Ray rows were made in other processes than the driver's
    assert {w for _, w in b.values()} != {w for _, w in a.values()}
    assert len({w for _, w in b.values()}) >= 2
