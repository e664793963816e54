"""Tool calling through a mixture, as a structured answer.

Every agent is shown the tools and the conversation, tool calls and tool results included
(as text: any backend can read them). The final answer is a JSON decision that the writer's
backend is asked for with a JSON schema (a grammar on the embedded model):

    {"tool_calls": [{"name": "get_weather", "arguments": {...}}, ...], "content": "..."}

`tool_calls` items allow only the offered tools, each with its own parameter schema; with
tool_choice "required" or a named function at least one call is required (and only that
function is allowed). The decision is checked and repaired like any structured answer
(smoa.answerformat), then sent in OpenAI's shape: `message.tool_calls` and
`finish_reason: "tool_calls"`, or plain content when no tool is called.

On OpenAI-compatible endpoints the writer's call uses the endpoint's native tool calling
(`tools`, `tool_choice`) and the reply's tool_calls are read back as the decision; an
endpoint that refuses tools is asked with the decision's JSON schema from then on. The
embedded model gets the schema as a grammar.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ..answerformat import AnswerFormat
from .errors import bad_request

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolPlan:
    tools: tuple[Tool, ...]
    choice: str  # "auto" | "required" | a function name
    parallel: bool = True

    @property
    def allowed(self) -> tuple[Tool, ...]:
        return self.tools if self.choice in ("auto", "required") else tuple(t for t in self.tools if t.name == self.choice)

    def schema(self) -> dict[str, Any]:
        call = [
            {"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
             "required": ["name", "arguments"]}
            for t in self.allowed
        ]
        calls: dict[str, Any] = {"type": "array", "items": call[0] if len(call) == 1 else {"anyOf": call}}
        if self.choice != "auto":
            calls["minItems"] = 1
        if not self.parallel:
            calls["maxItems"] = 1
        if self.choice != "auto":  # a call is due: no room for prose that a small model would ramble on in
            return {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]}
        return {"type": "object", "properties": {"tool_calls": calls, "content": {"type": "string"}},
                "required": ["tool_calls", "content"]}

    def guide(self) -> str:
        lines = ["You can call these tools (functions). The caller runs them and sends back their results."]
        for t in self.allowed:
            lines.append(f"- {t.name}: {t.description or '(no description)'}\n  parameters (JSON schema): "
                         f"{json.dumps(t.parameters, ensure_ascii=False)}")
        rule = {
            "auto": "Call a tool when you need its result to answer; otherwise answer directly.",
            "required": "You must call at least one tool now.",
        }.get(self.choice, f"You must call the tool {self.choice} now.")
        lines.append(rule)
        if self.choice != "auto":
            lines.append('Reply with one JSON object and nothing else: {"tool_calls": [{"name": ..., "arguments": {...}}]}.')
        else:
            lines.append(
                'Reply with one JSON object and nothing else: {"tool_calls": [{"name": ..., "arguments": {...}}], '
                '"content": "..."}. To call tools, list them in tool_calls (content may be empty). To answer '
                "directly, leave tool_calls empty and write the answer in content."
            )
        return "\n".join(lines)

    def native(self) -> tuple[tuple[dict[str, Any], ...], Any]:
        """The tools and tool_choice in OpenAI's form, for backends with native tool calling."""
        tools = tuple({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
                      for t in self.allowed)
        choice = self.choice if self.choice in ("auto", "required") else {"type": "function", "function": {"name": self.choice}}
        return tools, choice

    def answer_format(self) -> AnswerFormat:
        return AnswerFormat("json_schema", self.schema(), "tool_decision", guide=self.guide())


def parse_tools(tools: list[Any] | None, tool_choice: Any, parallel: bool | None) -> ToolPlan | None:
    """The request's tools and tool_choice; None when no tool may be called. 400s name the field."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise bad_request("tool_choice names a tool but no tools were given", "tool_choice")
        return None
    out: list[Tool] = []
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise bad_request(f"{where}: only {{\"type\": \"function\", \"function\": {{...}}}} tools are supported", where)
        f = t["function"]
        name = f.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise bad_request(f"{where}.function.name must be 1-64 letters, digits, _ or -", f"{where}.function.name")
        if any(x.name == name for x in out):
            raise bad_request(f"{where}.function.name {name!r} is given twice", f"{where}.function.name")
        params = f.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise bad_request(f"{where}.function.parameters must be a JSON schema object", f"{where}.function.parameters")
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError as e:
            raise bad_request(f"{where}.function.parameters is not a valid JSON schema: {e.message}",
                              f"{where}.function.parameters") from None
        desc = f.get("description") or ""
        out.append(Tool(name, desc if isinstance(desc, str) else str(desc), params))
    choice: str
    if tool_choice in (None, "auto"):
        choice = "auto"
    elif tool_choice == "none":
        return None
    elif tool_choice == "required":
        choice = "required"
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function" and isinstance(tool_choice.get("function"), dict):
        choice = tool_choice["function"].get("name")
        if choice not in {t.name for t in out}:
            raise bad_request(f"tool_choice names {choice!r}, which is not among the tools", "tool_choice")
    else:
        raise bad_request('tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
                          "tool_choice")
    return ToolPlan(tuple(out), choice, parallel is not False)


def openai_message(value: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The decision as an OpenAI assistant message, and its finish_reason."""
    calls = [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
        for c in value.get("tool_calls") or ()
    ]
    content = value.get("content") or ""
    if calls:
        return {"role": "assistant", "content": content or None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": content}, "stop"


def history_text(m: dict[str, Any], i: int, names: dict[str, str]) -> dict[str, Any] | None:
    """An assistant turn with tool_calls, or a tool result, as a text message any model reads;
    None for other messages. `names` maps call ids seen so far to function names."""
    role = m.get("role")
    if role == "assistant" and m.get("tool_calls"):
        calls = m["tool_calls"]
        if not isinstance(calls, list):
            raise bad_request(f"messages[{i}].tool_calls must be a list", f"messages[{i}].tool_calls")
        shown = []
        for j, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(c.get("id"), str):
                raise bad_request(f"messages[{i}].tool_calls[{j}] needs an id and function.name",
                                  f"messages[{i}].tool_calls[{j}]")
            names[c["id"]] = fn["name"]
            shown.append(f"- {fn['name']}({fn.get('arguments') or '{}'}) [call id {c['id']}]")
        text = m.get("content") if isinstance(m.get("content"), str) else ""
        return {"role": "assistant", "content": (text + "\n" if text else "") + "I called tools:\n" + "\n".join(shown)}
    if role in ("tool", "function"):
        cid = m.get("tool_call_id") if role == "tool" else None
        name = names.get(cid) if cid else m.get("name")
        if role == "tool" and (not isinstance(cid, str) or cid not in names):
            raise bad_request(f"messages[{i}]: a tool result must carry the tool_call_id of an earlier assistant tool call",
                              f"messages[{i}].tool_call_id")
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if not isinstance(content, str):
            raise bad_request(f"messages[{i}].content: a tool result must be text", f"messages[{i}].content")
        return {"role": "user", "content": f"Result of the tool call {name} [call id {cid}]:\n{content}"}
    return None
