"""A config where one agent's fallback must stay that agent's: proposer 1 falls back to
`spare`; the judge shares proposer 1's backend `main`, which refuses judge calls, and has no
fallback. If a pipeline ever hands the judge proposer 1's wrapped backend, `spare` answers
for the judge. Used by the server and the eval runner tests (they build pipelines repeatedly)."""

import json

from smoa.config import register_backend
from smoa.testing import ScriptedBackend, stage_of
from smoa.types import BackendError

MADE: dict[str, list[ScriptedBackend]] = {}


def _main(req):
    stage = stage_of(req)
    if stage == "judge":
        raise BackendError("main refuses judge calls", retryable=False)
    if stage == "aggregate":
        return "final answer"
    if stage == "role":
        return json.dumps({"roles": [{"name": "r", "description": "You are a role."}] * 3})
    return f"proposal with seed {req.settings.seed}: the answer is {req.settings.seed}"


def _spare(req):
    return json.dumps({"reasoning": "the spare model answered", "selected": [1, 2]})


def _factory(spec, name):
    be = ScriptedBackend(responder=_spare if name == "spare" else _main, name=name)
    MADE.setdefault(name, []).append(be)
    return be


register_backend("scripted-shared", _factory)

CONFIG = """
default = "mix"

[backends.main]
type = "scripted-shared"

[backends.spare]
type = "scripted-shared"

[pipelines.mix]
method = "smoa"
n = 3
k = 2
max_rounds = 1
seed = 1
cache = false
roles = ["You are a.", "You are b.", "You are c."]
proposers = [
  { backend = "main", model = "m", fallback = { backend = "spare", model = "s" } },
  { backend = "main", model = "m" },
  { backend = "main", model = "m" },
]
judge = { backend = "main", model = "m" }
moderator = { backend = "main", model = "m" }
aggregator = { backend = "main", model = "m" }
"""


def assert_judge_kept_its_own_backend(trace: dict) -> None:
    judge = [c for c in trace["calls"] if c["stage"] == "judge"]
    assert judge, "the judge was not called"
    for c in judge:
        # the judge has no fallback of its own: its call fails and the selection falls back
        assert c["fallback"] is None, f"the judge got proposer 1's fallback: {c['fallback']}"
        assert "main refuses judge calls" in (c["error"] or "")
    assert trace["layers"][0]["judge"]["fallback"] == "random"


def spare_calls() -> int:
    return sum(len(b.calls) for b in MADE.get("spare", []))
