"""Prompt templates live in `smoa/prompts/*.j2` and render with StrictUndefined:
a missing variable fails loudly instead of vanishing from the prompt."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


def _load(name: str) -> str:
    return resources.files("smoa").joinpath("prompts", name).read_text(encoding="utf-8")


def render(name: str, **variables: Any) -> str:
    return _env().get_template(name + ".j2").render(**variables).strip()
