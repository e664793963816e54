"""smoa.extract: one tolerant JSON extractor with one rule, and the answer extraction the core
shares with the eval scorers (without importing the eval package)."""

import subprocess
import sys

import pytest

from smoa.extract import extract_final_number, extract_json, json_candidates, loads_lenient
from smoa.verdicts import parse_labels, parse_moderator


@pytest.mark.parametrize(
    "text, keys, expected",
    [
        # the rule: the last object that has a wanted key
        ('Example: {"selected": [1]}. Mine: {"selected": [2, 3]}', ("selected",), {"selected": [2, 3]}),
        ('{"selected": [2]} and a note {"other": 1}', ("selected",), {"selected": [2]}),
        # no keys: the last object of all
        ('{"a": 1} then {"b": 2}', (), {"b": 2}),
        # key names match whatever their letter case
        ('{"Winner": "A"}', ("winner",), {"Winner": "A"}),
        # nothing with the key, nothing at all
        ('{"a": 1}', ("winner",), None),
        ("no object here", (), None),
        ("", (), None),
        # a fenced block, trailing commas, Python-style literals
        ('```json\n{"stop": true,}\n```', ("stop",), {"stop": True}),
        ("{'stop': False, 'reasoning': 'x'}", ("stop",), {"stop": False, "reasoning": "x"}),
        # nested objects are one candidate (the outermost), braces in strings do not count
        ('{"selected": [1], "why": {"x": "}"}}', ("selected",), {"selected": [1], "why": {"x": "}"}}),
    ],
)
def test_extract_json_rule(text, keys, expected):
    assert extract_json(text, keys) == expected


def test_candidates_order_and_lenient():
    assert json_candidates('a {"x": 1} b {"y": 2}') == ['a {"x": 1} b {"y": 2}', '{"x": 1}', '{"y": 2}']
    assert loads_lenient("{'a': null,}") == {"a": None}
    assert loads_lenient("not json") is None


def test_verdict_parsers_follow_the_rule():
    # the judge echoed the prompt's example first, then wrote its own verdict
    labels, _ = parse_labels('Format: {"selected": [1, 2]}\nMy verdict: {"selected": [3, 1], "reasoning": "r"}')
    assert labels == [3, 1]
    assert parse_moderator('{"stop": false} ... final: {"stop": true, "reasoning": "agree"}').stop is True


def test_final_number():
    assert extract_final_number("so the total is 12. #### 1,234.0") == "1234"
    assert extract_final_number("The answer is $-3$.") == "-3"
    assert extract_final_number("\\boxed{42}") == "42"
    assert extract_final_number("no digits") is None


def test_core_does_not_import_eval():
    code = "import sys, smoa.engine, smoa.answers, smoa.verdicts; print(any(m.startswith('smoa.eval') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
