"""Exact call graphs, selection, stopping and fallbacks, on the scripted backend."""

import asyncio
import json

import pytest

from smoa import ConfigError, SmoaError, resolve
from smoa.engine import Engine
from smoa.testing import ScriptedBackend, mixture_responder, stage_of
from smoa.types import BackendError


def make(method, responder=None, **kw):
    be = ScriptedBackend(responder=responder or mixture_responder())
    kw.setdefault("seed", 1)
    pipe = resolve(method=method, instances={"local": be}, **kw)
    return be, pipe


def run(pipe, q="What is 2+2?", **kw):
    return asyncio.run(Engine(pipe, **kw).run(q))


def stages(trace):
    return [(c.stage, c.layer) for c in trace.calls]


def test_single_is_one_call():
    be, pipe = make("single")
    r = run(pipe)
    assert stages(r.trace) == [("propose", 1)]
    assert r.answer == "proposal"
    assert r.trace.finish["kind"] == "single"


def test_moa_call_graph_n3_two_layers():
    be, pipe = make("moa", n=3, max_rounds=2)
    r = run(pipe)
    assert stages(r.trace) == [("propose", 1)] * 3 + [("propose", 2)] * 3 + [("aggregate", 3)]
    # every layer-2 prompt carries all 3 layer-1 answers
    for c in r.trace.calls[3:6]:
        assert c.messages[-1]["content"].count("<<<answer ") == 3
    assert r.trace.calls[-1].messages[-1]["content"].count("<<<answer ") == 3
    assert r.answer == "final answer"
    assert r.trace.stop_reason == "fixed"


def numbered(req):
    # each proposer answers differently so nothing is deduplicated
    return f"answer from seed {req.settings.seed}"


def test_smoa_call_graph_is_one_judge_call_per_layer():
    be, pipe = make("smoa", mixture_responder(propose=numbered), n=4, k=2, max_rounds=2)
    r = run(pipe)
    # the judge's verdict holds the stop decision: no moderator call (smoa-moderator below has one)
    assert stages(r.trace) == (
        [("role", 0)] + [("propose", 1)] * 4 + [("judge", 1)] + [("propose", 2)] * 4 + [("judge", 2), ("aggregate", 3)]
    )
    first = next(c for c in r.trace.calls if c.stage == "judge")
    assert "stop" in first.decision and r.trace.layers[0]["moderator"]["combined"] is True


def test_smoa_call_graph_and_layer2_carries_only_k():
    be, pipe = make("smoa-moderator", mixture_responder(propose=numbered), n=4, k=2, max_rounds=2)
    r = run(pipe)
    assert stages(r.trace) == (
        [("role", 0)] + [("propose", 1)] * 4 + [("judge", 1), ("moderate", 1)]
        + [("propose", 2)] * 4 + [("judge", 2), ("aggregate", 3)]
    )
    lay1 = r.trace.layers[0]
    kept_texts = [r.trace.calls[1 + i].response for i in lay1["kept"]]
    assert len(lay1["kept"]) == 2 and len(lay1["dropped"]) == 2
    for c in r.trace.calls:
        if c.stage == "propose" and c.layer == 2:
            prompt = c.messages[-1]["content"]
            assert prompt.count("<<<answer ") == 2
            for t in kept_texts:
                assert t in prompt
            # each proposer keeps its role, after the answers (they are the prefix all share)
            assert prompt.index("Answer as this member of the panel: You are scripted expert") > prompt.rindex("<<<end of answer")
    agg = r.trace.calls[-1].messages[-1]["content"]
    assert agg.count("<<<answer ") == 2
    assert r.trace.stop_reason == "max_rounds"


def test_judge_maps_shuffled_labels_back():
    # the judge picks the candidate whose text says seed 3 (proposer index 2), whatever its label
    def judge(req):
        text = req.messages[-1]["content"]
        import re

        labels = [int(m.group(1)) for m in re.finditer(r"<<<candidate (\d+) \w+>>>\n[^\n]*seed [34]\b", text)]
        return json.dumps({"reasoning": "r", "selected": labels})

    be, pipe = make("smoa", mixture_responder(propose=numbered, judge=judge), n=4, k=2, max_rounds=1, seed=1)
    r = run(pipe)
    # seeds are base_seed + i with base 1 => proposer indices 2, 3 have seeds 3, 4
    assert sorted(r.trace.layers[0]["kept"]) == [2, 3]
    assert r.trace.layers[0]["judge"]["fallback"] is None
    shown = r.trace.layers[0]["judge"]["shown_order"]
    assert sorted(shown) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "reply,fallback",
    [
        ("I like them all", "random"),
        ('{"selected": [9, 9]}', "random"),
        ('{"selected": [2, 2]}', "random_fill"),
        ('{"selected": [1, 2, 3]}', "truncated"),
        ('Sure! ```json\n{"reasoning": "x", "chosen responses": [1, 3]}\n```', None),
    ],
)
def test_unusable_verdict_falls_back_and_is_recorded(reply, fallback):
    be, pipe = make("smoa", mixture_responder(propose=numbered, judge=reply), n=4, k=2, max_rounds=1)
    r = run(pipe)
    j = r.trace.layers[0]["judge"]
    assert len(r.trace.layers[0]["kept"]) == 2
    assert len(set(r.trace.layers[0]["kept"])) == 2
    assert j["fallback"] == fallback
    judge_call = next(c for c in r.trace.calls if c.stage == "judge")
    assert judge_call.decision["fallback"] == fallback


def test_fallback_is_reproducible_with_seed():
    picks = []
    for _ in range(2):
        be, pipe = make("smoa", mixture_responder(propose=numbered, judge="nonsense"), n=5, k=2, max_rounds=1, seed=7)
        picks.append(run(pipe).trace.layers[0]["kept"])
    assert picks[0] == picks[1]


def test_duplicates_are_one_candidate_and_judge_skipped_when_few():
    be, pipe = make("smoa", mixture_responder(propose="same text"), n=4, k=2, max_rounds=1)
    r = run(pipe)
    assert [c.stage for c in r.trace.calls] == ["role"] + ["propose"] * 4 + ["aggregate"]
    j = r.trace.layers[0]["judge"]
    assert j["duplicates"] == [1, 2, 3] and r.trace.layers[0]["kept"] == [0]


def test_moderator_stops_early():
    be, pipe = make(
        "smoa-moderator", mixture_responder(propose=numbered, moderate='{"reasoning": "they agree", "stop": true}'), n=3, k=2, max_rounds=3
    )
    r = run(pipe)
    assert stages(r.trace) == [("role", 0)] + [("propose", 1)] * 3 + [("judge", 1), ("moderate", 1), ("aggregate", 2)]
    assert r.trace.stop_reason == "moderator"
    assert r.trace.layers[0]["moderator"]["reasoning"] == "they agree"


def test_max_rounds_is_hard_and_moderator_not_asked_on_last_round():
    be, pipe = make("smoa-moderator", mixture_responder(propose=numbered), n=3, k=2, max_rounds=3)
    r = run(pipe)
    assert [c.stage for c in r.trace.calls].count("moderate") == 2
    assert [c.stage for c in r.trace.calls].count("propose") == 9
    assert r.trace.stop_reason == "max_rounds"


def test_unusable_moderator_continues_with_recorded_fallback():
    be, pipe = make("smoa-moderator", mixture_responder(propose=numbered, moderate="maybe?"), n=3, k=2, max_rounds=2)
    r = run(pipe)
    assert r.trace.layers[0]["moderator"]["fallback"].startswith("no usable JSON")
    assert [c.stage for c in r.trace.calls].count("propose") == 6


def test_mad_majority_vote_and_debate_prompts():
    answers = iter(["The answer is 4.", "The answer is 4.", "The answer is 5.", "I now think 4. The answer is 4.", "The answer is 4.", "The answer is 5."])
    be, pipe = make("mad", mixture_responder(propose=lambda req: next(answers)), n=3, max_rounds=2)
    r = run(pipe)
    assert stages(r.trace) == [("propose", 1)] * 3 + [("propose", 2)] * 3
    assert r.trace.finish["kind"] == "vote" and r.trace.finish["answer"] == "4"
    # round 2: agent's own answer as assistant turn, the two others in the user turn
    c = r.trace.calls[3]
    assert c.messages[-2]["role"] == "assistant"
    assert c.messages[-1]["content"].count("<<<agent ") == 2


def test_mad_falls_back_to_aggregator_without_majority():
    answers = iter(["red", "blue", "green"] * 2)
    be, pipe = make("mad", mixture_responder(propose=lambda req: next(answers)), n=3, max_rounds=2)
    r = run(pipe)
    assert r.trace.calls[-1].stage == "aggregate"
    assert r.trace.finish["kind"] == "aggregate"


def test_self_moa_samples_one_model_n_times():
    be, pipe = make("self-moa", mixture_responder(propose=numbered), n=4)
    r = run(pipe)
    assert stages(r.trace) == [("propose", 1)] * 4 + [("aggregate", 2)]
    seeds = {c.settings.seed for c in be.calls if stage_of(c) == "propose"}
    assert len(seeds) == 4  # four distinct samples


def test_proposers_of_a_layer_run_concurrently():
    be = ScriptedBackend(responder=mixture_responder(propose=numbered), latency_s=0.05)
    pipe = resolve(method="moa", instances={"local": be}, n=6, max_rounds=1)
    asyncio.run(Engine(pipe).run("q"))
    assert be.max_in_flight == 6


def test_failed_proposer_is_dropped_and_recorded():
    from smoa.types import BackendError

    def propose(req):
        if req.settings.seed == 2:
            raise BackendError("endpoint down")
        return numbered(req)

    be, pipe = make("moa", mixture_responder(propose=propose), n=3, max_rounds=1)
    r = run(pipe)
    assert r.trace.layers[0]["failed"] == [1]
    assert r.trace.calls[1].error == "endpoint down"
    assert r.trace.calls[-1].messages[-1]["content"].count("<<<answer ") == 2


def test_all_proposers_failing_is_one_clear_error():
    from smoa.types import BackendError

    def propose(req):
        raise BackendError("endpoint down")

    be, pipe = make("moa", mixture_responder(propose=propose), n=2, max_rounds=1)
    with pytest.raises(SmoaError, match="every proposer failed in layer 1: endpoint down"):
        run(pipe)


def test_roles_are_cached_by_inputs():
    be, pipe = make("smoa", mixture_responder(propose=numbered), n=3, k=2, max_rounds=1)
    r1 = run(pipe)
    r2 = run(pipe)
    assert r1.trace.config["roles_source"] == "generated"
    assert r2.trace.config["roles_source"] == "cache"
    assert [c.stage for c in r2.trace.calls].count("role") == 0
    assert r1.trace.roles == r2.trace.roles
    # another task: generated anew
    be3, pipe3 = make("smoa", mixture_responder(propose=numbered), n=3, k=2, max_rounds=1, task="Write poems.")
    assert run(pipe3).trace.config["roles_source"] == "generated"


def test_too_few_roles_filled_cached_and_marked_padded():
    be, pipe = make("smoa", mixture_responder(propose=numbered, roles='{"roles": [{"name": "a", "description": "You are A."}]}'), n=3, k=2, max_rounds=1)
    r = run(pipe)
    assert r.trace.roles[0] == "You are A."
    assert r.trace.config["roles_fallback"] == 2
    assert len(set(r.trace.roles)) == 3
    from smoa import roles as roles_mod

    roles_mod._session.clear()  # as a new process would start: the disk cache still has them
    r2 = run(pipe)
    assert r2.trace.config["roles_source"] == "cache" and r2.trace.config["roles_fallback"] == 2
    assert [c.stage for c in r2.trace.calls].count("role") == 0 and r2.trace.roles == r.trace.roles


def test_a_failed_role_call_is_not_cached():
    calls = {"n": 0}

    def roles(req):
        calls["n"] += 1
        raise BackendError("the role generator is down")

    be, pipe = make("smoa", mixture_responder(propose=numbered, roles=roles), n=3, k=2, max_rounds=1)
    r = run(pipe)
    assert "roles_error" in r.trace.config and r.trace.config["roles_fallback"] == 3
    from smoa import roles as roles_mod

    roles_mod._session.clear()
    assert run(pipe).trace.config["roles_source"] == "generated" and calls["n"] == 2


def test_queries_that_start_together_generate_roles_once():
    be, pipe = make("smoa", mixture_responder(propose=numbered), n=3, k=2, max_rounds=1)

    async def many():
        return await asyncio.gather(*(Engine(pipe).run(f"q{i}") for i in range(4)))
    rs = asyncio.run(many())
    assert sum(1 for r in rs for c in r.trace.calls if c.stage == "role") == 1
    assert sorted(r.trace.config["roles_source"] for r in rs) == ["cache", "cache", "cache", "generated"]
    assert all(r.trace.roles == rs[0].trace.roles for r in rs)


def test_user_roles_skip_generation():
    be, pipe = make("smoa", mixture_responder(propose=numbered), n=2, k=1, max_rounds=1, roles=["You are X.", "You are Y."])
    r = run(pipe)
    assert "role" not in [c.stage for c in r.trace.calls]
    assert r.trace.calls[0].messages[0] == {"role": "system", "content": "You are X."}


def test_cost_by_stage_comes_from_trace():
    be, pipe = make("smoa", mixture_responder(propose=numbered), n=3, k=2, max_rounds=1)
    r = run(pipe)
    cost = r.cost
    assert set(cost["by_stage"]) == {"role", "propose", "judge", "aggregate"}
    assert cost["by_stage"]["propose"]["calls"] == 3
    total = sum(c.prompt_tokens + c.completion_tokens for c in r.trace.calls)
    assert cost["total"]["total_tokens"] == total > 0
    d = json.loads(r.trace.to_json())
    assert d["cost"] == json.loads(json.dumps(cost))


def test_streaming_final_answer():
    be, pipe = make("moa", mixture_responder(propose=numbered, aggregate="streamed final"), n=2, max_rounds=1)
    got = []
    r = run(pipe, on_delta=got.append)
    assert "".join(got) == r.answer == "streamed final"


def test_multi_turn_history_reaches_every_agent():
    be, pipe = make("moa", mixture_responder(propose=numbered), n=2, max_rounds=2)
    conv = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    run(pipe, q=conv)
    for req in be.calls:
        assert any(m["content"] == "My name is Ada." for m in req.messages)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(method="smoa", n=3, k=3), "k = 3 must be smaller than n = 3"),
        (dict(method="moa", k=2), "only methods with a judge keep k responses"),
        (dict(method="nope"), "unknown method 'nope'"),
        (dict(method="mad", n=1), "a debate needs at least 2 agents"),
    ],
)
def test_config_errors_name_the_field(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve(instances={"local": ScriptedBackend()}, **kw)


def test_empty_prompt_is_rejected():
    be, pipe = make("single")
    with pytest.raises(SmoaError, match="prompt is empty"):
        run(pipe, q="   ")


def test_roles_that_copy_the_prompt_template_are_not_roles():
    from smoa.verdicts import parse_roles

    echoed = '{"roles": [{"name": "short title", "description": "one or two sentences written to the assistant, starting with \'You are\'"}, {"name": "Chemist", "description": "You are a chemist who loves precise units."}]}'
    assert parse_roles(echoed, 3) == ["You are a chemist who loves precise units."]


def _cut_at(stage):
    """A responder whose `stage` call stops at max_tokens (finish_reason "length")."""
    from smoa.types import Completion

    base = mixture_responder()

    def respond(req):
        if stage_of(req) == stage:
            return Completion(text="The answer is", prompt_tokens=3, completion_tokens=3, model=req.model, finish_reason="length")
        return base(req)
    return respond


@pytest.mark.parametrize(("method", "cut", "want"), [
    ("moa", "aggregate", "length"), ("moa", "propose", "stop"), ("smoa", "aggregate", "length"),
    ("single", "propose", "length"), ("smoa", None, "stop"),
])
def test_finish_reason_follows_the_call_that_wrote_the_answer(method, cut, want):
    extra = {"n": 3, "k": 2} if method == "smoa" else {"n": 2} if method == "moa" else {}
    _, pipe = make(method, responder=_cut_at(cut) if cut else None, **extra)
    r = run(pipe)
    assert r.finish_reason == want
    assert all(c.finish_reason == ("length" if c.stage == cut else "stop") for c in r.trace.calls)


def _shared_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_prompts_that_carry_answers_share_their_front():
    """Layout for KV reuse: the same system prompt for every call that carries answers, then
    the user's message and the answers, then the call's own task. So the moderator, the next
    layer's proposers and the aggregator repeat one prefix up to the end of the kept answers,
    the judge repeats it up to its candidates, and n, k, the round and the role come after.
    (smoa-moderator: the layout with a moderator call; smoa's own calls are a subset of it.)"""
    be, pipe = make("smoa-moderator", mixture_responder(propose=numbered), n=4, k=2, max_rounds=2)
    r = run(pipe)
    calls = [c for c in r.trace.calls if c.stage != "role" and not (c.stage == "propose" and c.layer == 1)]
    assert {c.stage for c in calls} == {"judge", "moderate", "propose", "aggregate"}
    assert len({c.messages[0]["content"] for c in calls}) == 1 and all(c.messages[0]["role"] == "system" for c in calls)
    mod = next(c for c in calls if c.stage == "moderate")
    text = mod.messages[-1]["content"]
    block = text[: text.index("## Your task\n") + len("## Your task\n")]
    assert block.startswith("## The user's message\nWhat is 2+2?\n") and block.count("<<<answer ") == 2
    assert "round" not in block and "You are" not in block
    for c in calls:
        if c.stage in ("propose", "aggregate"):
            # the kept answers of layer 1 (next proposers) or of layer 2 (aggregator): same layout
            assert c.messages[-1]["content"].startswith("## The user's message\nWhat is 2+2?\n\n## Answers\n")
    later = [c.messages[-1]["content"] for c in calls if c.stage == "propose"]
    assert all(p.startswith(block) for p in later)  # the moderator's front, evaluated once for all four
    judge = next(c for c in calls if c.stage == "judge").messages[-1]["content"]
    assert _shared_prefix(judge, text) >= len("## The user's message\nWhat is 2+2?\n\n## ")
    assert judge.index(" 2 best") > judge.index("## Your task\n")  # k after the candidates


def test_scripted_backend_can_keep_no_call_history():
    """Benchmarks run tens of thousands of calls: their scripted backend keeps no history."""
    be = ScriptedBackend(responder=mixture_responder(), keep_calls=False)
    pipe = resolve(method="moa", instances={"local": be}, seed=1, n=2, max_rounds=2)
    r = run(pipe)
    assert r.answer == "final answer" and len(r.trace.calls) == 5 and be.calls == []
