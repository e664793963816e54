"""Structured final answers: `response_format` json_object / json_schema through a mixture.

    fmt = AnswerFormat.from_response_format({"type": "json_schema", "json_schema": {...}})
    conv = fmt.tell_proposers(conv)            # every agent sees the required shape
    Engine(pipe, answer_schema=fmt.schema)     # the writer asks its backend for the schema
    fmt.check(text) -> (value, None) | (None, "why it is not valid")

Validation is the `jsonschema` package's (Draft 2020-12, as OpenAI's structured outputs).
The writer's backend is asked for the schema (JSON schema for OpenAI-compatible endpoints,
with the backend's own step-down; a grammar on the embedded model); what comes back is
still checked here, because a stepped-down endpoint or a vote (mad) can hand back prose.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .types import Message

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.S)


class FormatError(ValueError):
    """The response_format itself is unusable; `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class AnswerFormat:
    kind: str  # "json_object" | "json_schema"
    schema: dict[str, Any]
    name: str = "answer"
    strict: bool = False
    guide: str | None = None  # what agents are told instead of the plain "reply with JSON" (tools)

    @classmethod
    def from_response_format(cls, rf: dict[str, Any] | None) -> AnswerFormat | None:
        """None for text; FormatError for a response_format smoa cannot honour."""
        kind = (rf or {}).get("type", "text")
        extra = sorted(set(rf or {}) - {"type", "json_schema"})
        if extra:
            raise FormatError(f"response_format.{extra[0]}: unknown field; remove it", f"response_format.{extra[0]}")
        if kind == "text":
            return None
        if kind == "json_object":
            return cls("json_object", {"type": "object"})
        if kind != "json_schema":
            raise FormatError(f"response_format.type {kind!r}: use text, json_object or json_schema", "response_format.type")
        spec = rf.get("json_schema") if rf else None
        if not isinstance(spec, dict):
            raise FormatError("response_format.json_schema is missing: give {name, schema, strict}", "response_format.json_schema")
        extra = sorted(set(spec) - {"name", "schema", "strict", "description"})
        if extra:
            raise FormatError(f"response_format.json_schema.{extra[0]}: unknown field; remove it",
                              f"response_format.json_schema.{extra[0]}")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise FormatError("response_format.json_schema.schema must be a JSON object (a JSON schema)",
                              "response_format.json_schema.schema")
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.path)
            raise FormatError(f"response_format.json_schema.schema is not a valid JSON schema{' at ' + where if where else ''}: "
                              f"{e.message}", "response_format.json_schema.schema") from None
        name = spec.get("name") or "answer"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise FormatError("response_format.json_schema.name must be 1-64 letters, digits, _ or -",
                              "response_format.json_schema.name")
        return cls("json_schema", schema, name, bool(spec.get("strict")))

    def instruction(self) -> str:
        if self.guide is not None:
            return self.guide
        if self.kind == "json_object":
            return "Reply with one JSON object and nothing else: no prose, no code fences."
        return ("Reply with one JSON value and nothing else (no prose, no code fences) that follows this JSON schema:\n"
                + json.dumps(self.schema, ensure_ascii=False))

    def tell_proposers(self, conv: tuple[Message, ...]) -> tuple[Message, ...]:
        """The conversation with the required shape as a system message after the leading ones."""
        i = 0
        while i < len(conv) and conv[i]["role"] == "system":
            i += 1
        return (*conv[:i], {"role": "system", "content": self.instruction()}, *conv[i:])

    def check(self, text: str) -> tuple[Any, str | None]:
        """(value, None) when `text` is JSON matching the schema (code fences around it are
        dropped), else (None, the first reason it is not)."""
        m = _FENCE.match(text)
        body = m.group(1) if m else text
        try:
            value = json.loads(body)
        except ValueError as e:
            return None, f"is not JSON ({e})"
        import jsonschema

        err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(self.schema).iter_errors(value))
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path)
            return None, f"does not match the schema{' at ' + where if where else ''}: {err.message}"
        return value, None

    def repair_messages(self, text: str, why: str) -> list[Message]:
        return [
            {"role": "system", "content": "You fix replies that must be JSON. " + self.instruction()},
            {"role": "user", "content": f"This reply {why}. Rewrite it as the required JSON, keeping its content:\n\n{text}"},
        ]
