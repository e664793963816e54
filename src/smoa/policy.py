"""Methods as typed policies: every method is one `Policy` over the engine's single loop.

A policy is five small choices plus the method's own rules (sizes), all in one place:

| piece      | choices                                                                   |
|------------|---------------------------------------------------------------------------|
| proposers  | plain, roles (generated personas), one-model (one model sampled n times)  |
| later      | what later rounds see: none, synthesize (kept answers), debate (others')  |
| forward    | all, judge (the judge keeps the best k)                                   |
| stop       | fixed; or, checked in order: agreement, moderator, verdict                |
| finish     | aggregate, vote (majority, else aggregate), single (the one answer)       |
| shuffle    | the order the judge sees: none, seed (one for every query), query (default)|
| verdict    | how much the judge and moderator write: full, terse                       |

Stop rules (join several with "+", checked in the order given; the first that says stop wins):
- `fixed`: run max_rounds layers (no early stop; cannot be combined).
- `moderator`: a moderator call after each layer but the last.
- `verdict`: the judge's own verdict holds the stop decision: judge and moderator are one call
  per layer, as in the SMoA reference (needs forward = judge).
- `agreement`: stop, without any call, when the kept responses agree (at least two, and the
  same extracted final answer or the same normalised text).

Verdicts (`verdict`):
- `full`: the judge gives a few sentences of reasoning before its labels (judge.j2, verdict.j2,
  moderator.j2), within the judge's own max_tokens.
- `terse`: short instructions and a verdict of labels, stop and at most one short sentence,
  labels first (judge_terse.j2, verdict_terse.j2, moderator_terse.j2); the schema caps the
  sentence (`verdicts.TERSE_REASON_CHARS`) and the call's max_tokens is capped too
  (`verdicts.TERSE_MAX_TOKENS`). The judge's prompt still carries every candidate; what it
  saves is the instructions and the written reasoning (issue 16: most of the sparse step's cost).

Everything here is plain data with exhaustive handling: an unknown name is a `ConfigError`
that lists the valid ones, and the engine matches every enum with `assert_never`. Config, the
eval runner and the CLI ask the policy (`sizes`, `sparse`, `uses_roles`, `one_model`, ...)
instead of testing method names. Adding a method is one entry in `POLICIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from .types import ConfigError


class Proposers(Enum):
    PLAIN = "plain"
    ROLES = "roles"
    ONE_MODEL = "one-model"


class Later(Enum):
    NONE = "none"
    SYNTHESIZE = "synthesize"
    DEBATE = "debate"


class Forward(Enum):
    ALL = "all"
    JUDGE = "judge"


class Stop(Enum):
    FIXED = "fixed"
    AGREEMENT = "agreement"
    MODERATOR = "moderator"
    VERDICT = "verdict"


class Finish(Enum):
    AGGREGATE = "aggregate"
    VOTE = "vote"
    SINGLE = "single"


class Shuffle(Enum):
    NONE = "none"
    SEED = "seed"  # from the pipeline seed alone: every query sees the same permutation
    QUERY = "query"  # seeded from (seed, question, layer): varies across queries, stable per input (the default)


class Verdict(Enum):
    FULL = "full"
    TERSE = "terse"


def _names(e: type[Enum]) -> str:
    return ", ".join(str(m.value) for m in e)


def parse_stop(text: str) -> tuple[Stop, ...]:
    """'agreement+moderator' -> (Stop.AGREEMENT, Stop.MODERATOR); unknown names raise ConfigError."""
    parts = [p.strip() for p in str(text).split("+")]
    out: list[Stop] = []
    for p in parts:
        try:
            rule = Stop(p)
        except ValueError:
            raise ConfigError(f"unknown stop rule {p!r}: use one of {_names(Stop)} (join several with '+')") from None
        if rule in out:
            raise ConfigError(f"stop rule {p!r} is given twice: name each rule once")
        out.append(rule)
    if Stop.FIXED in out and len(out) > 1:
        raise ConfigError("stop = 'fixed' runs every round and cannot be combined with other rules: drop 'fixed'")
    if Stop.MODERATOR in out and Stop.VERDICT in out:
        raise ConfigError("stop: 'moderator' and 'verdict' both ask an LLM whether to stop: keep one")
    return tuple(out)


def parse_shuffle(value: bool | str) -> Shuffle:
    if isinstance(value, bool):
        return Shuffle.SEED if value else Shuffle.NONE
    try:
        return Shuffle(str(value).strip())
    except ValueError:
        raise ConfigError(f"unknown shuffle {value!r}: use one of {_names(Shuffle)} (true = seed, false = none)") from None


def parse_verdict(value: str) -> Verdict:
    try:
        return Verdict(str(value).strip())
    except ValueError:
        raise ConfigError(f"unknown verdict {value!r}: use one of {_names(Verdict)}") from None


def stop_text(stop: tuple[Stop, ...]) -> str:
    return "+".join(s.value for s in stop)


@dataclass(frozen=True)
class Policy:
    """One method: its five choices, its shuffle, its verdict, and its rules on n, k and rounds."""

    name: str
    proposers: Proposers
    later: Later
    forward: Forward
    stop: tuple[Stop, ...]
    finish: Finish
    # query, not seed: with one permutation for every query a judge that keeps by position
    # keeps the same proposers every time (study B at 256 tokens, seed shuffle: the order
    # shown was (0, 2, 1) on all 20 items and proposer 1 was dropped on 19 of them)
    shuffle: Shuffle = Shuffle.QUERY
    verdict: Verdict = Verdict.FULL
    # the method's rules: defaults and limits (k only for a sparse forwarder)
    n: int = 4
    k: int | None = None
    max_rounds: int = 2
    min_n: int = 1
    one_shot: bool = False  # exactly one proposer and one round (single)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The choices must fit together (a bad override is a ConfigError, not a silent fallback)."""
        if not self.stop:
            raise ConfigError(f"{self.name}: stop needs at least one rule: use 'fixed' for none")
        if Stop.VERDICT in self.stop and self.forward is not Forward.JUDGE:
            raise ConfigError(
                f"{self.name}: stop = 'verdict' reads the judge's verdict, but this method has no judge: "
                "use 'moderator' or 'agreement'"
            )
        if self.verdict is not Verdict.FULL and not self.sparse and Stop.MODERATOR not in self.stop:
            raise ConfigError(
                f"{self.name}: verdict = {self.verdict.value!r} shapes the judge's and moderator's replies, but this "
                "method has neither: drop verdict"
            )
        if self.sparse and self.min_n < 2:
            raise ConfigError(f"{self.name}: a judge keeps k < n responses, so the method needs min_n >= 2")
        if self.k is not None and not self.sparse:
            raise ConfigError(f"{self.name}: only a judge keeps k responses: drop k")

    # -- what the rest of smoa asks --------------------------------------------
    @property
    def sparse(self) -> bool:
        """The judge keeps k of n: the method takes k."""
        return self.forward is Forward.JUDGE

    @property
    def uses_roles(self) -> bool:
        return self.proposers is Proposers.ROLES

    @property
    def one_model(self) -> bool:
        """All proposers are one agent (one model): give one proposer."""
        return self.one_shot or self.proposers is Proposers.ONE_MODEL

    def with_choices(
        self, stop: str | None = None, shuffle: bool | str | None = None, verdict: str | None = None,
    ) -> Policy:
        """This policy with the pipeline's own stop rule, shuffle and verdict (None: keep the method's)."""
        upd: dict[str, Any] = {}
        if stop is not None:
            upd["stop"] = parse_stop(stop)
        if shuffle is not None:
            upd["shuffle"] = parse_shuffle(shuffle)
        if verdict is not None:
            upd["verdict"] = parse_verdict(verdict)
        return replace(self, **upd) if upd else self

    def sizes(self, n: int | None, k: int | None, max_rounds: int | None, listed: int, where: str) -> tuple[int, int | None, int]:
        """(n, k, max_rounds) from what the user gave (None: the method's default) and the number
        of proposers listed; a ConfigError naming the field when they do not fit the method."""
        if self.one_shot:
            if n not in (None, 1):
                raise ConfigError(f"{where}.n: the {self.name} method uses one model: drop n or use another method")
            n_, rounds = 1, 1
        else:
            n_ = n if n is not None else (listed if listed > 1 else self.n)
            rounds = max_rounds if max_rounds is not None else self.max_rounds
        kept: int | None = None
        if self.sparse:
            kept = k if k is not None else min(self.k or 2, max(1, n_ - 1))
        elif k is not None:
            raise ConfigError(
                f"{where}.k: only methods with a judge keep k responses ({', '.join(sparse_methods())}); "
                f"drop k or use one of them"
            )
        if n_ < self.min_n:
            what = f"a debate needs at least {self.min_n} agents" if self.later is Later.DEBATE else (
                f"{self.name} needs at least {self.min_n} proposers")
            raise ConfigError(f"{where}.n = {n_}: {what}")
        if kept is not None and kept >= n_:
            raise ConfigError(f"{where}.k = {kept} must be smaller than n = {n_}: the judge keeps k of the n responses")
        return n_, kept, rounds

    def describe(self) -> dict[str, Any]:
        return {
            "proposers": self.proposers.value, "later": self.later.value, "forward": self.forward.value,
            "stop": stop_text(self.stop), "finish": self.finish.value, "shuffle": self.shuffle.value,
            "verdict": self.verdict.value,
        }


# smoa: one judge call per layer whose verdict holds the selection, the reasoning and stop
# true/false, as the SMoA reference code makes it. A separate moderator call (smoa-moderator,
# the default until session 6) carries the kept answers once more: in study B it was 19% of
# smoa's tokens (BENCHMARKS.md "Quality"), for a decision the judge's call can hold.
_SMOA = Policy(
    "smoa", Proposers.ROLES, Later.SYNTHESIZE, Forward.JUDGE, (Stop.VERDICT,), Finish.AGGREGATE,
    n=4, k=2, max_rounds=2, min_n=2,
)

# Method defaults: SMoA's reference code uses 4 proposers, k = 2, up to 2 rounds; MoA's uses
# more layers but we keep sizes equal so the comparison is at equal n and layers.
POLICIES: dict[str, Policy] = {
    "single": Policy("single", Proposers.PLAIN, Later.NONE, Forward.ALL, (Stop.FIXED,), Finish.SINGLE,
                     n=1, max_rounds=1, one_shot=True),
    "moa": Policy("moa", Proposers.PLAIN, Later.SYNTHESIZE, Forward.ALL, (Stop.FIXED,), Finish.AGGREGATE,
                  n=4, max_rounds=2),
    "smoa": _SMOA,
    "mad": Policy("mad", Proposers.PLAIN, Later.DEBATE, Forward.ALL, (Stop.FIXED,), Finish.VOTE,
                  n=3, max_rounds=2, min_n=2),
    "self-moa": Policy("self-moa", Proposers.ONE_MODEL, Later.SYNTHESIZE, Forward.ALL, (Stop.FIXED,), Finish.AGGREGATE,
                       n=4, max_rounds=1),
    # the sparse-step variants (issue 16): a moderator call of its own; stop on agreement
    "smoa-moderator": replace(_SMOA, name="smoa-moderator", stop=(Stop.MODERATOR,)),
    # smoa-combined is smoa's own policy since smoa took its one-call verdict; the name stays so
    # that configs and result stores that use it (bench/study) still load
    "smoa-combined": replace(_SMOA, name="smoa-combined"),
    "smoa-agree": replace(_SMOA, name="smoa-agree", stop=(Stop.AGREEMENT, Stop.MODERATOR)),
    "smoa-lite": replace(_SMOA, name="smoa-lite", stop=(Stop.AGREEMENT, Stop.VERDICT)),
    # smoa-lite with a terse verdict: labels, stop and one short sentence, under a small max_tokens
    "smoa-terse": replace(_SMOA, name="smoa-terse", stop=(Stop.AGREEMENT, Stop.VERDICT), verdict=Verdict.TERSE),
}

METHODS: tuple[str, ...] = tuple(POLICIES)


def sparse_methods() -> list[str]:
    return [m for m, p in POLICIES.items() if p.sparse]


def get_policy(method: str) -> Policy:
    try:
        return POLICIES[method]
    except KeyError:
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}") from None
