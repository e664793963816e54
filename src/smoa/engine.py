"""One layered loop; every method is a policy over it (smoa.policy).

    propose (n agents, concurrently) -> forward (all | judge top-k) -> stop? (rules in order)
    ... repeat up to max_rounds ... -> finish (aggregate | vote | single answer)

| method        | proposers        | later layers see        | forward  | stop                | finish              |
|---------------|------------------|-------------------------|----------|---------------------|---------------------|
| single        | 1                | -                       | -        | fixed               | the one answer      |
| moa           | n                | all n (synthesize)      | all      | fixed               | aggregator over n   |
| smoa          | n, with roles    | judge's k (synthesize)  | judge k  | moderator           | aggregator over k   |
| smoa-combined | n, with roles    | judge's k (synthesize)  | judge k  | verdict (1 call)    | aggregator over k   |
| smoa-agree    | n, with roles    | judge's k (synthesize)  | judge k  | agreement+moderator | aggregator over k   |
| smoa-lite     | n, with roles    | judge's k (synthesize)  | judge k  | agreement+verdict   | aggregator over k   |
| smoa-terse    | n, with roles    | judge's k (synthesize)  | judge k  | agreement+verdict   | aggregator over k   |
| mad           | n                | others' answers (debate)| all      | fixed               | vote, else aggregate|
| self-moa      | 1 model, n times | -                       | all      | fixed               | aggregator over n   |

smoa-terse is smoa-lite with verdict = "terse": short judge/moderator instructions and a verdict
of labels, stop and one short sentence under a small max_tokens (smoa.policy, smoa.verdicts).

Every policy choice is an enum matched exhaustively here (`assert_never`): a new choice that
the loop does not handle fails the type checker and, at run time, loudly.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from . import roles as roles_mod
from .answers import agreement, extract_answer, majority, normalized
from .config import Agent, Pipeline
from .guard import defang, strip_echoes
from .limits import Limiter, backend_limiter
from .policy import POLICIES, Finish, Forward, Later, Policy, Shuffle, Stop, Verdict
from .prompting import render
from .redaction import StreamRedactor, redact, redact_output
from .trace import CallRecord, Trace
from .types import (
    BackendError,
    Completion,
    Message,
    Request,
    Settings,
    SmoaError,
    normalize_messages,
)
from .verdicts import (
    MODERATOR_SCHEMA,
    TERSE_MAX_TOKENS,
    TERSE_MODERATOR_SCHEMA,
    judge_schema,
    parse_moderator,
    parse_roles,
    resolve_selection,
    roles_schema,
    terse_judge_schema,
    verdict_schema,
)
from .wrappers import close_call_log, open_call_log

__all__ = ["POLICIES", "Engine", "Policy", "Proposal", "Result"]


@dataclass
class Proposal:
    index: int  # proposer index 0..n-1
    agent: Agent
    role: str | None
    call: CallRecord
    text: str = ""
    ok: bool = True
    error: BackendError | None = None


@dataclass
class Result:
    answer: str
    trace: Trace

    @property
    def cost(self) -> dict[str, Any]:
        return self.trace.cost()

    @property
    def health(self) -> dict[str, Any]:
        """Faults the query survived: retries, dropped proposers, fallbacks (see Trace.health)."""
        return self.trace.health()

    @property
    def finish_reason(self) -> str:
        """"length" when the call that wrote the answer stopped at max_tokens, else "stop"
        (a vote, like mad's, writes nothing and counts as "stop")."""
        calls = [c for c in self.trace.calls if not c.error]
        final = next((c for c in reversed(calls) if c.stage == "aggregate"), None)
        if final is None and self.trace.finish.get("kind") == "single":
            final = next((c for c in reversed(calls) if c.stage == "propose"), None)
        return "length" if final is not None and final.finish_reason == "length" else "stop"

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "cost": self.cost, "health": self.health, "trace": self.trace.to_dict()}


Callback = Callable[..., Any]


@dataclass
class Engine:
    """Runs one pipeline on one query. Cheap to create; create one per query."""

    pipeline: Pipeline
    on_delta: Callback | None = None  # called with each piece of the final answer
    on_event: Callback | None = None  # called with progress dicts (call start/end, decisions)
    role_cache: bool = True
    # Shared across queries: at most this many LLM calls in flight (None: no global limit).
    # Per-endpoint limits come from `backend.max_concurrency` and are shared too.
    limiter: Limiter | None = None
    # Run every call of this query one at a time (what the SMoA reference code does).
    sequential: bool = False
    # the final answer's JSON schema (response_format): its writer asks its backend for it
    answer_schema: dict[str, Any] | None = None
    # tool definitions behind a tool-decision answer_schema: backends with native tool calling use them
    answer_tools: tuple[dict[str, Any], ...] | None = None
    answer_tool_choice: Any = None
    _one: Limiter | None = field(default=None, repr=False)
    trace: Trace | None = field(default=None, repr=False)  # set when run() starts
    # secrets a model wrote are masked in the answer, streamed or not (SMOA_RAW_OUTPUT=1: off)
    _out: StreamRedactor = field(default_factory=StreamRedactor, repr=False)

    # -- plumbing -------------------------------------------------------------
    def _limiters(self, agent: Agent) -> list[Limiter]:
        out = [x for x in (backend_limiter(agent.backend), self.limiter) if x is not None]
        if self.sequential:
            if self._one is None:
                self._one = Limiter(1)
            out.append(self._one)
        return out

    async def _delta(self, piece: str) -> None:
        if self.on_delta is not None:
            out = self._out.feed(piece)
            if out:
                await self._emit(self.on_delta, out)

    async def _emit(self, cb: Callback | None, *args: Any) -> None:
        if cb is None:
            return
        r = cb(*args)
        if inspect.isawaitable(r):
            await r

    async def call(
        self,
        trace: Trace,
        agent: Agent,
        messages: list[Message],
        stage: str,
        layer: int,
        role: str | None = None,
        json_schema: dict[str, Any] | None = None,
        settings: Settings | None = None,
        stream: bool = False,
    ) -> CallRecord:
        """One LLM call, recorded in the trace. Raises BackendError after recording it."""
        req = Request(
            messages=tuple(messages),
            model=agent.model,
            settings=agent.settings.overlay(settings),
            json_schema=json_schema,
            seed_given=agent.seed_given,
        )
        if json_schema is not None and json_schema is self.answer_schema and self.answer_tools:
            req = replace(req, tools=self.answer_tools, tool_choice=self.answer_tool_choice)
        held: list[Limiter] = []
        try:
            for lim in self._limiters(agent):  # always in one order: endpoint, global, sequential
                await lim.acquire()
                held.append(lim)
        except BaseException:
            for lim in reversed(held):
                lim.release()
            raise
        rec = trace.new_call(
            layer=layer,
            stage=stage,
            agent=agent.name,
            role=role,
            backend=agent.backend_name,
            model=agent.model,
            messages=[dict(m) for m in messages],
            provider=agent.backend.kind,
            settings=req.settings.as_dict(),
        )
        await self._emit(self.on_event, {"type": "call_start", "call": rec.id, "stage": stage, "layer": layer, "agent": agent.name})
        t0 = time.perf_counter()
        log, log_token = open_call_log()  # retries and fallbacks of the wrappers land here
        try:
            if stream:
                comp: Completion | None = None
                async for ev in agent.backend.stream(req):
                    if ev.delta:
                        await self._delta(ev.delta)
                    if ev.completion is not None:
                        comp = ev.completion
                if comp is None:
                    raise BackendError(f"{agent.backend.describe()}: the stream ended without a completion")
            else:
                comp = await agent.backend.complete(req)
        except BackendError as e:
            rec.error = str(e)
            raise
        except asyncio.CancelledError:
            rec.error = "cancelled"
            raise
        except Exception as e:  # a backend bug must not lose the trace
            rec.error = redact(f"{type(e).__name__}: {e}")
            raise BackendError(
                f"{agent.backend.describe()}: {type(e).__name__}: {e}", timeout=isinstance(e, TimeoutError)
            ) from e
        finally:
            rec.latency_s = round(time.perf_counter() - t0, 6)
            close_call_log(log_token)
            rec.attempts = max(1, log.attempts)
            rec.attempt_errors = list(log.errors)
            rec.fallback = log.fallback
            for lim in reversed(held):
                lim.release()
        rec.response = comp.text
        rec.prompt_tokens = comp.prompt_tokens
        rec.completion_tokens = comp.completion_tokens
        rec.cached = comp.cached
        rec.estimated = comp.estimated
        rec.finish_reason = comp.finish_reason
        rec.response_model = comp.model or None
        rec.prompt_evaluated = comp.prompt_evaluated
        await self._emit(
            self.on_event,
            {"type": "call_end", "call": rec.id, "stage": stage, "layer": layer, "agent": agent.name,
             "tokens": comp.prompt_tokens + comp.completion_tokens, "latency_s": rec.latency_s},
        )
        return rec

    # -- stages ---------------------------------------------------------------
    async def assign_roles(self, trace: Trace, policy: Policy) -> list[str | None]:
        p = self.pipeline
        own = [a.role for a in p.proposers]
        if p.roles is not None:
            trace.config["roles_source"] = "given"
            return list(p.roles)
        if not policy.uses_roles or all(r is not None for r in own):
            if any(r is not None for r in own):
                trace.config["roles_source"] = "given"
            return own
        gen = p.role_generator
        key = roles_mod.roles_key(p.dataset, p.task, p.n, f"{gen.backend.describe()}|{gen.model}")
        if not self.role_cache:
            generated = await self._generate_roles(trace, key)
        else:
            async with roles_mod.key_lock(key):
                generated = await self._generate_roles(trace, key)
        return [own[i] if own[i] is not None else generated[i] for i in range(p.n)]

    async def _generate_roles(self, trace: Trace, key: str) -> list[str]:
        p = self.pipeline
        gen = p.role_generator
        cached = roles_mod.load_cached(key) if self.role_cache else None
        session = roles_mod.recalled(key) if self.role_cache and cached is None else None
        if cached is not None and len(cached[0]) >= p.n:
            generated = cached[0][: p.n]
            trace.config["roles_source"] = "cache"
            if cached[1]:
                # padded when generated: say so, the built-in roles are not the generator's
                trace.config["roles_fallback"] = min(cached[1], p.n)
        elif session is not None and len(session[0]) >= p.n:
            generated = session[0][: p.n]
            trace.config["roles_source"] = "session"  # generated earlier in this process, padded
            trace.config["roles_fallback"] = session[1]
        else:
            msgs = [{"role": "user", "content": render("roles", n=p.n, dataset=p.dataset, task=p.task)}]
            try:
                rec = await self.call(trace, gen, msgs, "role", 0, json_schema=roles_schema(p.n))
                got = parse_roles(rec.response, p.n)
            except BackendError as e:
                got = []
                trace.config["roles_error"] = str(e)
            generated, added = roles_mod.fill_roles(got, p.n)
            trace.config["roles_source"] = "generated"
            if added:
                trace.config["roles_fallback"] = added
            # a failed call is not cached: the next query asks again
            if self.role_cache and "roles_error" not in trace.config:
                roles_mod.store(key, generated, {"dataset": p.dataset, "task": p.task, "n": p.n, "padded": added})
            if self.role_cache and added:
                roles_mod.remember(key, generated, added)
        return generated

    def proposer_messages(
        self, conv: tuple[Message, ...], policy: Policy, layer: int, i: int, role: str | None,
        forward: list[Proposal], last: dict[int, Proposal],
    ) -> list[Message]:
        plain: list[Message] = ([{"role": "system", "content": role}] if role else []) + list(conv)
        if layer == 1:
            return plain
        match policy.later:
            case Later.NONE:
                return plain
            case Later.SYNTHESIZE:
                texts = [p.text for p in forward]
                nonce = _nonce(self.pipeline.seed, _question_text(conv), texts)
                return _panel(conv, "synthesize", role=role, nonce=nonce, responses=[_defang(t, nonce) for t in texts])
            case Later.DEBATE:
                # own last answer as the assistant's turn, the others' as the next user turn
                others = [p.text for j, p in sorted(last.items()) if j != i]
                nonce = _nonce(self.pipeline.seed, _question_text(conv), others)
                if i in last:
                    plain.append({"role": "assistant", "content": last[i].text})
                plain.append({"role": "user", "content": render(
                    "debate", nonce=nonce, others=[_defang(t, nonce) for t in others], hint="")})
                return plain
            case _:
                assert_never(policy.later)

    async def propose_layer(
        self, trace: Trace, conv: tuple[Message, ...], policy: Policy, layer: int, roles: list[str | None],
        forward: list[Proposal], last: dict[int, Proposal],
    ) -> list[Proposal]:
        p = self.pipeline
        writes = policy.finish is Finish.SINGLE  # single: this call writes the answer
        # streamed only when someone listens: the OpenAI backend asks for no schema in a stream
        stream_single = writes and self.on_delta is not None
        schema = self.answer_schema if writes else None

        async def one(i: int) -> Proposal:
            agent = p.proposers[i]
            msgs = self.proposer_messages(conv, policy, layer, i, roles[i], forward, last)
            rec = await self.call(trace, agent, msgs, "propose", layer, role=roles[i], json_schema=schema, stream=stream_single)
            return Proposal(index=i, agent=agent, role=roles[i], call=rec, text=rec.response)

        results = await asyncio.gather(*(one(i) for i in range(p.n)), return_exceptions=True)
        proposals: list[Proposal] = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, BackendError):
                    raise r
                rec = next(c for c in reversed(trace.calls) if c.stage == "propose" and c.layer == layer and c.agent == p.proposers[i].name)
                proposals.append(Proposal(index=i, agent=p.proposers[i], role=roles[i], call=rec, ok=False, error=r))
            else:
                proposals.append(r)
        return proposals

    async def judge(
        self, trace: Trace, question: str, ok: list[Proposal], layer: int, rng: random.Random, ask_stop: bool = False,
    ) -> tuple[list[Proposal], dict[str, Any], dict[str, Any] | None]:
        """The judge keeps k of the responses. With `ask_stop` the same call also decides whether
        to stop (the combined verdict); the third value is then that stop decision, shaped like
        `moderate`'s, or None when the judge was not called (nothing to choose)."""
        p = self.pipeline
        k = p.k or len(ok)
        # identical answers are one candidate
        unique: list[Proposal] = []
        seen: set[str] = set()
        dup: list[int] = []
        for prop in ok:
            key = normalized(prop.text)
            if key in seen:
                dup.append(prop.index)
                continue
            seen.add(key)
            unique.append(prop)
        info: dict[str, Any] = {"k": k, "candidates": [u.index for u in unique], "duplicates": dup}
        if len(unique) <= k:
            info.update(kept=[u.index for u in unique], reason=f"only {len(unique)} distinct responses for k = {k}: all kept, judge not called")
            return unique, info, None
        order = list(range(len(unique)))
        match p.policy.shuffle:
            case Shuffle.NONE:
                pass
            case Shuffle.SEED:
                rng.shuffle(order)
            case Shuffle.QUERY:
                query_rng(p.seed, question, layer).shuffle(order)
            case _:
                assert_never(p.policy.shuffle)
        nonce = _nonce(p.seed, question, [unique[i].text for i in order])
        candidates: list[dict[str, Any]] = [{"label": j + 1, "text": _defang(unique[idx].text, nonce)} for j, idx in enumerate(order)]
        template, schema = _judge_prompt(p.policy.verdict, ask_stop, n=len(unique), k=k)
        msgs = _panel(question, template, n=len(unique), k=k, nonce=nonce, candidates=[c["text"] for c in candidates],
                      round=layer, max_rounds=p.max_rounds)
        error: str | None = None
        try:
            rec = await self.call(trace, p.judge, msgs, "judge", layer, json_schema=schema,
                                  settings=_verdict_settings(p.policy.verdict, p.judge))
            text = rec.response
        except BackendError as e:
            rec, text = None, ""
            error = info["error"] = str(e)
        # only the judge's own output counts: JSON copied from a candidate is blanked
        text, echoes = strip_echoes(text, [unique[i].text for i in order] + [c["text"] for c in candidates])
        verdict = resolve_selection(text, order, k, rng)
        if echoes:
            verdict.notes.append(f"ignored {echoes} JSON object(s) copied from candidates")
        kept = [unique[i] for i in verdict.selected]
        info.update(
            call_id=rec.id if rec else None,
            shown_order=[unique[i].index for i in order],
            kept=[u.index for u in kept],
            reasoning=verdict.reasoning,
            fallback=verdict.fallback,
            notes=verdict.notes,
        )
        stop: dict[str, Any] | None = None
        if ask_stop:
            if rec is None:
                stop = {"call_id": None, "stop": False, "reasoning": "", "fallback": "judge unreachable: continue",
                        "error": error, "combined": True}
            else:
                mv = parse_moderator(text)
                stop = {"call_id": rec.id, "stop": mv.stop, "reasoning": mv.reasoning, "fallback": mv.fallback, "combined": True}
        if rec is not None:
            rec.decision = {"kept": info["kept"], "fallback": verdict.fallback}
            if stop is not None:
                rec.decision.update(stop=stop["stop"], stop_fallback=stop["fallback"])
        await self._emit(self.on_event, {"type": "judge", "layer": layer, "kept": info["kept"], "fallback": verdict.fallback})
        if stop is not None:
            await self._emit(self.on_event, {"type": "moderator", "layer": layer, "stop": stop["stop"], "fallback": stop["fallback"]})
        return kept, info, stop

    async def moderate(self, trace: Trace, question: str, kept: list[Proposal], layer: int) -> dict[str, Any]:
        p = self.pipeline
        nonce = _nonce(p.seed, question, [x.text for x in kept])
        template, schema = _moderator_prompt(p.policy.verdict)
        msgs = _panel(question, template, round=layer, max_rounds=p.max_rounds, nonce=nonce,
                      responses=[_defang(x.text, nonce) for x in kept])
        try:
            rec = await self.call(trace, p.moderator, msgs, "moderate", layer, json_schema=schema,
                                  settings=_verdict_settings(p.policy.verdict, p.moderator))
            own, _ = strip_echoes(rec.response, [x.text for x in kept] + [_defang(x.text, nonce) for x in kept])
            v = parse_moderator(own)
            info = {"call_id": rec.id, "stop": v.stop, "reasoning": v.reasoning, "fallback": v.fallback}
            rec.decision = {"stop": v.stop, "fallback": v.fallback}
        except BackendError as e:
            info = {"call_id": None, "stop": False, "reasoning": "", "fallback": "moderator unreachable: continue", "error": str(e)}
        await self._emit(self.on_event, {"type": "moderator", "layer": layer, "stop": info["stop"], "fallback": info["fallback"]})
        return info

    async def aggregate(self, trace: Trace, conv: tuple[Message, ...], final: list[Proposal], layer: int) -> str:
        p = self.pipeline
        texts = [x.text for x in final]
        nonce = _nonce(p.seed, _question_text(conv), texts)
        msgs = _panel(conv, "aggregate", nonce=nonce, responses=[_defang(t, nonce) for t in texts])
        rec = await self.call(
            trace, p.aggregator, msgs, "aggregate", layer,
            json_schema=self.answer_schema, stream=self.on_delta is not None,
        )
        trace.finish = {"kind": "aggregate", "call_id": rec.id, "inputs": [x.index for x in final]}
        return rec.response

    # -- the loop ---------------------------------------------------------------
    async def run(self, query: str | list[Message] | tuple[Message, ...]) -> Result:
        p = self.pipeline
        policy = p.policy
        conv = normalize_messages(query)
        trace = Trace(method=p.method, pipeline=p.name, query=[dict(m) for m in conv], config=p.summary())
        self.trace = trace  # the query's trace so far, also for a caller that cancels the query
        try:
            if p.deadline_s is None:
                answer = await self._run(trace, conv, policy)
            else:
                try:
                    async with asyncio.timeout(p.deadline_s) as cm:
                        answer = await self._run(trace, conv, policy)
                except TimeoutError:
                    if not cm.expired():
                        raise
                    pending = sum(1 for c in trace.calls if c.error == "cancelled")
                    raise BackendError(
                        f"the query ran past its deadline of {p.deadline_s:g} s (deadline_s) with {pending} call(s) "
                        "unanswered: an endpoint is slow or hanging; raise deadline_s or lower timeout_s/retries",
                        timeout=True,
                    ) from None
        except BaseException as e:
            trace.error = str(e) if isinstance(e, SmoaError) else redact(f"{type(e).__name__}: {e}")
            trace.wall_s = round(trace.elapsed(), 6)
            if isinstance(e, SmoaError):
                e.trace = trace
            raise
        rest = self._out.flush()
        if rest and self.on_delta is not None:
            await self._emit(self.on_delta, rest)
        answer = redact_output(answer)
        trace.answer = answer
        trace.wall_s = round(trace.elapsed(), 6)
        return Result(answer=answer, trace=trace)

    async def _run(self, trace: Trace, conv: tuple[Message, ...], policy: Policy) -> str:
        p = self.pipeline
        rng = random.Random(p.seed)
        question = _question_text(conv)
        roles = await self.assign_roles(trace, policy)
        trace.roles = [r or "" for r in roles]
        forward: list[Proposal] = []
        last: dict[int, Proposal] = {}
        trace.stop_reason = "max_rounds"
        layer = 0
        for layer in range(1, p.max_rounds + 1):
            proposals = await self.propose_layer(trace, conv, policy, layer, roles, forward, last)
            ok = [x for x in proposals if x.ok]
            info: dict[str, Any] = {
                "layer": layer,
                "proposals": [
                    {"index": x.index, "agent": x.agent.name, "role": x.role, "model": x.agent.model,
                     "backend": x.agent.backend_name, "call_id": x.call.id, "ok": x.ok, "error": x.call.error}
                    for x in proposals
                ],
                "failed": [x.index for x in proposals if not x.ok],
            }
            trace.layers.append(info)
            if not ok:
                errs = "; ".join(sorted({x.call.error or "" for x in proposals}))
                raise BackendError(f"every proposer failed in layer {layer}: {errs}", timeout=_all_timeouts(proposals))
            if len(ok) < p.min_proposers:
                errs = "; ".join(sorted({x.call.error or "" for x in proposals if not x.ok}))
                raise BackendError(
                    f"only {len(ok)} of {len(proposals)} proposers answered in layer {layer}, fewer than "
                    f"min_proposers = {p.min_proposers}: {errs}",
                    timeout=_all_timeouts(proposals),
                )
            ask_verdict = Stop.VERDICT in policy.stop and layer < p.max_rounds
            verdict_stop: dict[str, Any] | None = None
            match policy.forward:
                case Forward.ALL:
                    kept = ok
                case Forward.JUDGE:
                    kept, jinfo, verdict_stop = await self.judge(trace, question, ok, layer, rng, ask_stop=ask_verdict)
                    info["judge"] = jinfo
                case _:
                    assert_never(policy.forward)
            info["kept"] = [x.index for x in kept]
            info["dropped"] = [x.index for x in proposals if x.index not in info["kept"]]
            forward = kept
            last = {x.index: x for x in ok}
            if layer < p.max_rounds:
                reason = await self._should_stop(trace, question, policy, ok, kept, layer, info, verdict_stop)
                if reason is not None:
                    trace.stop_reason = info["stopped_by"] = reason
                    break
            elif Stop.FIXED in policy.stop:
                trace.stop_reason = "fixed"
        finish_layer = layer + 1
        match policy.finish:
            case Finish.SINGLE:
                trace.finish = {"kind": "single", "call_id": forward[0].call.id}
                return forward[0].text
            case Finish.VOTE:
                extracted = [extract_answer(x.text) for x in forward]
                winner, counts = majority(extracted)
                if winner is not None:
                    chosen = next(x for x, a in zip(forward, extracted, strict=True) if a == winner)
                    trace.finish = {"kind": "vote", "answer": winner, "votes": counts, "call_id": chosen.call.id}
                    await self._delta(chosen.text)
                    return chosen.text
                answer = await self.aggregate(trace, conv, forward, finish_layer)
                trace.finish.update(vote_failed=counts)
                return answer
            case Finish.AGGREGATE:
                return await self.aggregate(trace, conv, forward, finish_layer)
            case _:
                assert_never(policy.finish)

    async def _should_stop(
        self, trace: Trace, question: str, policy: Policy, ok: list[Proposal], kept: list[Proposal], layer: int,
        info: dict[str, Any], verdict_stop: dict[str, Any] | None,
    ) -> str | None:
        """The policy's stop rules in order; the first that says stop names the reason."""
        for rule in policy.stop:
            match rule:
                case Stop.FIXED:
                    pass
                case Stop.AGREEMENT:
                    # the kept responses and the identical answers the judge folded into them
                    keys = {normalized(x.text) for x in kept}
                    group = [x for x in ok if normalized(x.text) in keys]
                    agreed = agreement([x.text for x in group])
                    info["agreement"] = {"agree": agreed is not None, "responses": [x.index for x in group], **(agreed or {})}
                    if agreed is not None:
                        await self._emit(self.on_event, {"type": "agreement", "layer": layer, **agreed})
                        return "agreement"
                case Stop.MODERATOR:
                    info["moderator"] = await self.moderate(trace, question, kept, layer)
                    if info["moderator"]["stop"]:
                        return "moderator"
                case Stop.VERDICT:
                    if verdict_stop is None:  # the judge had nothing to choose: ask the stop alone
                        verdict_stop = await self.moderate(trace, question, kept, layer)
                        verdict_stop["note"] = "judge not called (nothing to choose): the moderator decided"
                    info["moderator"] = verdict_stop
                    if verdict_stop["stop"]:
                        return "verdict"
                case _:
                    assert_never(rule)
        return None


def _judge_prompt(verdict: Verdict, ask_stop: bool, n: int, k: int) -> tuple[str, dict[str, Any]]:
    """The judge's task template (rendered by `_panel` after the candidates) and schema for the
    policy's verdict; with `ask_stop` it also decides stop."""
    match verdict:
        case Verdict.FULL:
            return ("verdict", verdict_schema(n, k)) if ask_stop else ("judge", judge_schema(n, k))
        case Verdict.TERSE:
            return ("verdict_terse" if ask_stop else "judge_terse"), terse_judge_schema(n, k, stop=ask_stop)
        case _:
            assert_never(verdict)


def _moderator_prompt(verdict: Verdict) -> tuple[str, dict[str, Any]]:
    """The moderator's task template (rendered by `_panel` after the answers) and schema for the policy's verdict."""
    match verdict:
        case Verdict.FULL:
            return "moderator", MODERATOR_SCHEMA
        case Verdict.TERSE:
            return "moderator_terse", TERSE_MODERATOR_SCHEMA
        case _:
            assert_never(verdict)


def _verdict_settings(verdict: Verdict, agent: Agent) -> Settings | None:
    """A terse verdict's call runs under TERSE_MAX_TOKENS (or the agent's own max_tokens, if smaller)."""
    match verdict:
        case Verdict.FULL:
            return None
        case Verdict.TERSE:
            own = agent.settings.max_tokens
            return Settings(max_tokens=min(own, TERSE_MAX_TOKENS) if own else TERSE_MAX_TOKENS)
        case _:
            assert_never(verdict)


def _all_timeouts(proposals: list[Proposal]) -> bool:
    failed = [x for x in proposals if not x.ok]
    return bool(failed) and all(x.error is not None and x.error.timeout for x in failed)


def _question_text(conv: tuple[Message, ...]) -> str:
    last = conv[-1]["content"]
    if len(conv) == 1:
        return last
    hist = "\n".join(f"{m['role']}: {m['content']}" for m in conv[:-1])
    return f"(Earlier conversation)\n{hist}\n\n(Latest user message)\n{last}"


def _panel(conv: tuple[Message, ...] | str, template: str, **variables: Any) -> list[Message]:
    """The messages of a prompt that carries answers (judge, verdict, moderator, aggregate,
    synthesize), laid out so that they share a token prefix: the fixed panel system prompt
    (the same for every such call of every query), then the user's message and the answers,
    then the call's own task (which is where n, k, the round and a proposer's role go).

    `conv` is the question text (judge and moderator read the conversation flattened) or the
    conversation: earlier turns then stay messages of their own, before the one with the
    answers, so a user's own system prompt still reaches the writer. For a one-message
    query the two give the same tokens up to the end of the answers, and an embedded model
    evaluates that part once (KV reuse, smoa.backends.batching) for the moderator, the next
    layer's proposers and the aggregator."""
    if isinstance(conv, str):
        earlier: list[Message] = []
        question = conv
    else:
        earlier, question = list(conv[:-1]), conv[-1]["content"]
    return [{"role": "system", "content": render("panel")}, *earlier,
            {"role": "user", "content": render(template, question=question, **variables)}]


def query_rng(seed: int | None, question: str, layer: int) -> random.Random:
    """The judge's shuffle for one (seed, question, layer): a stable hash (not Python's salted
    hash()), so the order changes across queries and layers yet the same inputs give the same prompt."""
    digest = hashlib.sha256(f"{seed}\0{layer}\0{question}".encode("utf-8", "replace")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _nonce(seed: int | None, question: str, texts: list[str]) -> str:
    """The marker nonce: a hash over the candidates themselves, so no candidate can contain
    it (it would have to contain a hash of itself), yet the same inputs give the same
    prompt, which keeps judge and moderator calls reproducible and cacheable."""
    h = hashlib.sha256(f"{seed}\0{question}".encode())
    for t in texts:
        h.update(b"\0" + t.encode("utf-8", "replace"))
    return h.hexdigest()[:8]


def _defang(text: str, nonce: str) -> str:
    """Candidate text must not be able to fake our markers: break any look-alike (smoa.guard)."""
    return defang(text, nonce)
