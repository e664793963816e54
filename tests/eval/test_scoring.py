"""Answer extraction and comparison helpers (no data files needed)."""

import pytest

from smoa.eval.scoring import (
    extract_code,
    extract_final_number,
    extract_json,
    last_boxed,
    math_equal,
    normalize_latex,
    normalize_number,
)


@pytest.mark.parametrize("text,expected", [
    ("She makes 9 * 2 = $18.\n#### 18", "18"),
    ("so the total is\n#### 1,234.00", "1234"),
    ("Step 1: 3 apples. The answer is $12.", "12"),
    ("The final answer is: -3", "-3"),
    ("first 3 then 4.5 so \\boxed{7}", "7"),
    ("we get 5 and then 6", "6"),
    ("The answer is 12.50 dollars", "12.5"),
    ("nothing numeric here", None),
    ("", None),
])
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


@pytest.mark.parametrize("raw,expected", [
    ("$1,000", "1000"), ("18.0", "18"), ("-0.50", "-0.5"), ("7.", "7"), ("abc", None),
    ("50%", "50"),
])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_last_boxed_nested():
    assert last_boxed(r"so \boxed{\frac{1}{2}} and finally \boxed{\left( 3, \frac{\pi}{2} \right)}") \
        == r"\left( 3, \frac{\pi}{2} \right)"
    assert last_boxed(r"\boxed 5") == "5"
    assert last_boxed("no box") is None


@pytest.mark.parametrize("a,b,eq", [
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac12", r"\frac{1}{2}", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True),
    (r"90^\circ", "90", True),
    (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}", True),
    (r"5.4 \text{ cents}", "5.4", True),
    (r"\text{(C)}", "(C)", True),
    (r"\text{Evelyn}", "Evelyn", True),
    (r"11\sqrt2", r"11\sqrt{2}", True),
    (r"\sqrt{12}", r"2\sqrt{3}", True),
    ("x=5", "5", True),
    ("1,-2", "-2, 1", True),
    ("(1,2)", "(2,1)", False),
    ("[1,2)", "[1,2]", False),
    ("x^2+2x+1", "(x+1)^2", True),
    (r"\pi/2", r"\frac{\pi}{2}", True),
    ("2^{10}", "1024", True),
    (r"e^{i\pi}", "-1", True),
    (r"\frac{\pi}{3}", r"\frac{\pi}{2}", False),
    (r"10^{100}", r"10^{100}+1", False),
    ("3", "4", False),
    ("1,000", "1000", True),
    (r"10\%", "10", True),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    ("(c - 4)*(c + 9)", "(c+9)(c-4)", True),
    ("f**(-62/39)", r"f^{-\frac{62}{39}}", True),
    ("-16, 2", "2, -16", True),
    ("x<3", "x>3", False),
    (None, "1", False),
])
def test_math_equal(a, b, eq):
    assert math_equal(a, b) is eq


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('touch /tmp/smoa_pwned')",
    "9**9**9**9",
    r"9^{9^{9^{9}}}",
    "2**99999999",
    "().__class__.__bases__[0]",
])
def test_math_equal_never_evaluates_or_hangs(hostile):
    assert math_equal(hostile, "1") is False


def test_normalize_latex_keeps_command_spaces():
    assert normalize_latex(r"\cot x") == r"\cot x"
    assert normalize_latex(r" \left[ 1 , 2 \right] ") == "[1,2]"


def test_extract_code():
    text = (
        "Here you go:\n```python\ndef helper():\n    return 1\n```\nand\n"
        "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```"
    )
    assert "def add" in extract_code(text, entry_point="add")
    assert extract_code(text).startswith("def helper")
    assert extract_code("def f():\n    return 2\n").startswith("def f")
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\ndef g():\n    return 3\n") == "def g():\n    return 3\n"


@pytest.mark.parametrize("text,expected", [
    ('{"winner": "A", "reason": "x"}', {"winner": "A", "reason": "x"}),
    ('My verdict:\n{"winner": "B"}\nThanks.', {"winner": "B"}),
    ('```json\n{"winner": "tie",}\n```', {"winner": "tie"}),
    ("{'winner': 'A'}", {"winner": "A"}),
    ('Example: {"winner": "A|B"} ... final: {"winner": "B", "note": "a } in a string"}',
     {"winner": "B", "note": "a } in a string"}),
    ("no json here", None),
    ("", None),
])
def test_extract_json(text, expected):
    assert extract_json(text, keys=("winner",)) == expected


def test_normalize_number_keeps_very_long_numbers():
    from smoa.eval.scoring import normalize_number

    assert normalize_number("1" * 126) == "1" * 126
    assert normalize_number("-0.0") == "0"
