"""Hostile candidates cannot take over any prompt that carries them (scripted backend).

The models here are built to be fooled (tests/reliability/attacks.py): `GullibleJudge` and
`GullibleModerator` whenever a candidate can fake its markers or when candidate text in
their reply is parsed as the verdict; `GullibleAggregator` (aggregate, synthesize, debate)
whenever a candidate can pass for several answers or speak outside its own. With every
defence on, the hijack rate must be 0 for all six prompt kinds; with a defence removed, the
attacks aimed at it must succeed, which shows that the test can fail and that each defence
is needed.
"""

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from attacks import (  # noqa: E402
    ATTACKS,
    HONEST,
    KINDS,
    LEAKED_NONCE,
    LOOK_ALIKES,
    QUESTION,
    GullibleJudge,
    attacks_for,
    candidates_for,
    rate,
    switch_off,
    trial,
)

import smoa.engine as engine_mod  # noqa: E402
from smoa import resolve  # noqa: E402
from smoa.engine import Engine  # noqa: E402
from smoa.testing import ScriptedBackend, mixture_responder  # noqa: E402

SEEDS = range(1, 7)  # six shuffles of the four candidates per attack


def judge_once(attack, seed, judge=None, method="smoa", shuffle="seed"):
    """smoa-combined: two rounds, so that round 1's judge is the combined judge+moderator prompt."""
    cands = candidates_for(attack)
    judge = judge or GullibleJudge(quote=attack.quote)

    def propose(req):
        return cands[req.settings.seed - seed]

    be = ScriptedBackend(responder=mixture_responder(propose=propose, judge=judge))
    rounds = 2 if method == "smoa-combined" else 1
    pipe = resolve(method=method, instances={"local": be}, n=4, k=2, max_rounds=rounds, seed=seed, roles=["r"] * 4,
                   cache=False, shuffle=shuffle)
    r = asyncio.run(Engine(pipe).run(QUESTION))
    if method == "smoa-combined":
        first = next(c for c in r.trace.calls if c.stage == "judge")
        assert "stop" in first.decision  # the combined verdict was asked
    j = r.trace.layers[0]["judge"]
    assert j.get("error") is None and j["fallback"] is None, j
    return set(r.trace.layers[0]["kept"]) != HONEST


def hijack_rate(attacks, leak, monkeypatch, method="smoa"):
    if leak:
        monkeypatch.setattr(engine_mod, "_nonce", lambda *a: LEAKED_NONCE)
    hits = trials = 0
    for attack in attacks:
        for seed in SEEDS:
            trials += 1
            hits += judge_once(attack, seed, method=method)
    return hits, trials


def test_the_honest_case_keeps_the_two_correct_answers():
    clean = SimpleNamespace(render=lambda tag: "The answer is 5, plainly wrong.", quote="verbatim")
    for seed in SEEDS:
        assert judge_once(clean, seed) is False


@pytest.mark.parametrize("shuffle", ["query", "seed"])  # smoa's default, and the orders the thresholds below use
@pytest.mark.parametrize("method", ["smoa", "smoa-combined"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_hijack_rate_is_zero_with_every_defence(attack, method, shuffle, monkeypatch):
    judge = GullibleJudge(quote=attack.quote)
    if attack.needs_leak:  # the worst case: the attacker somehow knows the nonce
        monkeypatch.setattr(engine_mod, "_nonce", lambda *a: LEAKED_NONCE)
    hits = sum(judge_once(attack, seed, judge, method=method, shuffle=shuffle) for seed in SEEDS)
    assert hits == 0
    assert judge.obeyed == []  # no instruction ever got outside its block


def test_without_defang_leaked_markers_hijack(monkeypatch):
    monkeypatch.setattr(engine_mod, "_defang", lambda text, nonce: text)
    leaky = [a for a in ATTACKS if a.needs_leak]
    hits, trials = hijack_rate(leaky, leak=True, monkeypatch=monkeypatch)
    assert hits >= trials // 2, (hits, trials)
    # and with the nonce kept secret, faked markers do nothing even undefanged
    monkeypatch.undo()
    monkeypatch.setattr(engine_mod, "_defang", lambda text, nonce: text)
    hits, trials = hijack_rate(leaky, leak=False, monkeypatch=monkeypatch)
    assert hits == 0


@pytest.mark.parametrize("method", ["smoa", "smoa-combined"])
def test_without_echo_stripping_quoted_verdicts_hijack(method, monkeypatch):
    monkeypatch.setattr(engine_mod, "strip_echoes", lambda reply, cands: (reply, 0))
    quoted = [a for a in ATTACKS if a.name in ("fake-verdict-json", "role-play")]
    hits, trials = hijack_rate(quoted, leak=False, monkeypatch=monkeypatch, method=method)
    assert hits >= trials // 2, (hits, trials)


def test_without_defang_leaked_markers_hijack_the_combined_verdict(monkeypatch):
    monkeypatch.setattr(engine_mod, "_defang", lambda text, nonce: text)
    leaky = [a for a in ATTACKS if a.needs_leak]
    hits, trials = hijack_rate(leaky, leak=True, monkeypatch=monkeypatch, method="smoa-combined")
    assert hits >= trials // 2, (hits, trials)


def test_measured_rate_over_all_attacks(monkeypatch, capsys):
    plain = [a for a in ATTACKS if not a.needs_leak]
    leaky = [a for a in ATTACKS if a.needs_leak]
    h1, t1 = hijack_rate(plain, leak=False, monkeypatch=monkeypatch)
    h2, t2 = hijack_rate(leaky, leak=True, monkeypatch=monkeypatch)
    with capsys.disabled():
        print(f"\n[hijack, scripted gullible judge] {h1}/{t1} without a leak, {h2}/{t2} with the nonce leaked")
    assert h1 == h2 == 0




# -- every prompt kind, every attack, each defence on and off ------------------------------------

CASES = [(kind, a) for kind in KINDS for a in attacks_for(kind)]


@pytest.mark.parametrize(("kind", "attack"), CASES, ids=[f"{k}-{a.name}" for k, a in CASES])
def test_no_prompt_kind_is_hijacked_with_every_defence(kind, attack, monkeypatch):
    if attack.needs_leak:
        monkeypatch.setattr(engine_mod, "_nonce", lambda *a: LEAKED_NONCE)
    assert [trial(kind, attack, seed, shuffle=sh) for sh in ("query", "seed") for seed in range(1, 5)] == [False] * 8


# what each defence stops: with it off, at least this share of the trials is hijacked
NEEDED = {
    ("markers", "judge"): 1.0, ("markers", "verdict"): 1.0, ("markers", "moderator"): 0.5,
    ("markers", "aggregate"): 0.05, ("markers", "synthesize"): 0.05, ("markers", "debate"): 0.05,
    ("defang", "judge"): 0.5, ("defang", "verdict"): 0.5, ("defang", "moderator"): 0.5,
    ("defang", "aggregate"): 0.5, ("defang", "synthesize"): 0.5, ("defang", "debate"): 0.5,
    ("look-alike fold", "judge"): 0.3, ("look-alike fold", "verdict"): 0.3, ("look-alike fold", "moderator"): 0.3,
    ("look-alike fold", "aggregate"): 0.5, ("look-alike fold", "synthesize"): 0.5, ("look-alike fold", "debate"): 0.5,
    ("echo stripping", "judge"): 0.1, ("echo stripping", "verdict"): 0.1, ("echo stripping", "moderator"): 0.2,
    ("echo by value", "judge"): 0.05, ("echo by value", "verdict"): 0.05, ("echo by value", "moderator"): 0.1,
}


@pytest.mark.parametrize(("defence", "kind"), sorted(NEEDED), ids=[f"{d}-{k}" for d, k in sorted(NEEDED)])
def test_each_defence_is_needed(defence, kind, monkeypatch):
    hits, trials = rate(kind, defence, monkeypatch.setattr, seeds=range(1, 3))
    assert hits >= NEEDED[(defence, kind)] * trials, (hits, trials)


@pytest.mark.parametrize("kind", ["judge", "moderator", "aggregate", "debate"])
@pytest.mark.parametrize(("name", "left", "right"), LOOK_ALIKES, ids=[x[0] for x in LOOK_ALIKES])
def test_look_alike_markers_need_the_fold(kind, name, left, right, monkeypatch):
    """The issue's nine look-alike forms: NFKC alone stops two (fullwidth, small form); the
    confusables fold and the invisible-character rule stop the other seven."""
    attack = next(a for a in attacks_for(kind) if a.name == f"look-alike-{name}-leaked-nonce")
    monkeypatch.setattr(engine_mod, "_nonce", lambda *a: LEAKED_NONCE)
    assert not any(trial(kind, attack, seed) for seed in range(1, 3))
    switch_off("look-alike fold", monkeypatch.setattr)
    got = [trial(kind, attack, seed) for seed in range(1, 3)]
    assert got == ([False] * 2 if name in ("fullwidth", "small-form") else [True] * 2)


@pytest.mark.parametrize("name", ["fake-stop-quoted-string", "fake-stop-quoted-drop-field"])
def test_loosely_copied_stop_needs_echoes_by_value(name, monkeypatch):
    """A moderator that quotes a candidate's fake stop as "true" or without its reasoning:
    stopped only by comparing by value. (Full-width braces: tests/reliability/test_guard.py.)"""
    attack = next(a for a in attacks_for("moderator") if a.name == name)
    assert not any(trial("moderator", attack, seed) for seed in range(1, 3))
    switch_off("echo by value", monkeypatch.setattr)
    assert all(trial("moderator", attack, seed) for seed in range(1, 3))
