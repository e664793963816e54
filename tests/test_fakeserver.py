"""The fake upstream's schema check: the same verdicts as jsonschema, with one validator per schema.

`bench library` measures smoa against the fake server's latency; before the validator was
made once per schema, every judge call held the server's event loop for the metaschema
check (about 2 ms here) and every other reply waited behind it (BENCHMARKS.md, issue 15).
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from smoa import fakeserver
from smoa.verdicts import judge_schema, verdict_schema

SCHEMAS = [verdict_schema(8, 3), judge_schema(3, 2), {"type": "object", "required": ["a"]}]
TEXTS = [
    '{"reasoning": "x", "selected": [1, 2, 3], "stop": false}',
    '{"reasoning": "x", "selected": [1, 2]}',
    '{"reasoning": "x", "selected": [9, 9, 9], "stop": true}',
    '{"a": 1}',
    "[]",
    "not json",
    "",
]


def _official(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("schema", SCHEMAS, ids=["verdict", "judge", "object"])
def test_fits_agrees_with_jsonschema_validate(schema):
    for text in TEXTS:
        assert fakeserver._fits(text, schema) is _official(text, schema), text


def test_a_schema_that_is_not_one_fits_nothing():
    assert not fakeserver._fits('{"a": 1}', {"type": 12})
    assert not fakeserver._fits('{"a": 1}', {"type": 12})  # and is not cached as fitting


def test_one_validator_per_schema_whatever_its_key_order():
    fakeserver._validator.cache_clear()
    schema = verdict_schema(8, 3)
    reordered = dict(reversed(list(schema.items())))
    for _ in range(5):
        fakeserver._fits(TEXTS[0], schema)
        fakeserver._fits(TEXTS[1], reordered)
    info = fakeserver._validator.cache_info()
    assert (info.misses, info.hits) == (1, 9)
