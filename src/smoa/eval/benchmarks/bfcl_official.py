"""BFCL's official verdicts: the decoder and AST checker rules of ``bfcl-eval``, written here.

A BFCL score compares with the leaderboard only when the reply is decoded and checked the way
the official ``bfcl-eval`` package does it for prompting models (its
``default_decode_ast_prompting`` followed by ``ast_checker``). We do not import that package:
its checker module imports the package's whole model-handler tree (the SDKs of every hosted
model, sentence-transformers and torch, tree-sitter), far too much to put in smoa's way. So
the rules are written here from their description, and ``tests/eval/test_bfcl_agreement.py``
checks, verdict by verdict, that this module and the real package (installed by ``make test``
in a side folder, used only by that test) agree on a bank of gold and perturbed replies built
from the BFCL data.

Decoding (Python call syntax only):

- outer spaces, newlines and backticks are stripped; ``[`` / ``]`` added where missing; then
  outer whitespace and single quotes; the text must parse as one Python expression: a call
  or a list/tuple of calls (prose, JSON, a fence with a language tag all fail);
- a call's name is its dotted name; only keyword arguments count (positional ones are
  dropped, so the checker then finds required parameters missing);
- values: literals; ``-`` before a literal; lists, tuples, dicts; a bare name becomes its
  text (``unit=celsius`` -> ``"celsius"``); a call without keywords becomes its source text,
  one with keywords a nested ``{name: {args}}``; ``a[b]`` its source text; arithmetic is
  evaluated. Anything else fails the decode.

Upstream evaluates arithmetic with ``eval``; here only constant arithmetic is computed (with
size limits), so an expression that needs a name or a call fails here (the one known place
the two can differ; none of the BFCL gold answers need one).

Checking, per expected call (``simple``: the first function doc; ``multiple``: one call of the
expected function; ``parallel*``: as many calls as expected, matched in any order, each
expected call taking the first unmatched reply call that fits):

- the name must match exactly; every parameter the doc requires must be present; every given
  parameter must be in the doc and among the expected ones; an expected one may be missing
  only when ``""`` is among its allowed values;
- types are exact Python types for the doc's type (``integer`` int, ``float`` float where an
  int is promoted, ``string``/``any`` str, ``boolean`` bool, ``array``/``tuple`` list where a
  tuple is accepted for ``tuple`` only, ``dict`` dict); array items are type-checked one
  level deep; a value of the allowed values' own type is taken as a "variable" and compared
  as it is;
- strings compare after dropping spaces and ``,./-_*^`` and lowering case (tabs and newlines
  are kept); list items that are strings likewise; dict values likewise, dict keys exactly;
  numbers by ``==`` (so ``5.0`` matches ``5``).

``irrelevance`` is correct when the reply does not decode to at least one call.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

__all__ = ["DecodeError", "decode_calls", "check_decoded", "score_reply"]

Decoded = list[dict[str, dict[Any, Any]]]

_MAX_TEXT = 200_000
_MAX_NUMBER_BITS = 4096
_MAX_SEQ = 100_000


class DecodeError(ValueError):
    """The reply is not in BFCL's function-call format."""


# ------------------------------------------------------------------------------ decoding
def decode_calls(text: str) -> Decoded:
    """Calls in a reply, as ``[{name: {param: value}}]``. Raises DecodeError."""
    s = (text or "").strip("`\n ")
    if not s.startswith("["):
        s = "[" + s
    if not s.endswith("]"):
        s += "]"
    s = s.strip().strip("'")
    if len(s) > _MAX_TEXT:
        raise DecodeError(f"reply longer than {_MAX_TEXT} characters")
    try:
        tree = ast.parse(s, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise DecodeError(f"not Python call syntax ({type(e).__name__})") from e
    body = tree.body
    if isinstance(body, ast.Call):
        return [_call(body)]
    elts = getattr(body, "elts", None)
    if elts is None:
        raise DecodeError(f"not a list of calls ({type(body).__name__})")
    calls = []
    for e in elts:
        if not isinstance(e, ast.Call):
            raise DecodeError(f"an element is not a call ({type(e).__name__})")
        calls.append(_call(e))
    return calls


def _call(node: ast.Call) -> dict[str, dict[Any, Any]]:
    parts: list[str] = []
    f: ast.AST = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    name = ".".join(reversed(parts))
    return {name: {kw.arg: _value(kw.value) for kw in node.keywords}}


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):  # the operand's value negated, whatever the operator
        if not isinstance(node.operand, ast.Constant):
            raise DecodeError("a unary operator on something other than a literal")
        try:
            return -node.operand.value
        except TypeError as e:
            raise DecodeError(f"cannot negate {node.operand.value!r}") from e
    if isinstance(node, ast.List):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(v) for v in node.elts)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise DecodeError("'**' inside a dict")
            key = _value(k)
            try:
                out[key] = _value(v)
            except TypeError as e:  # an unhashable key
                raise DecodeError("a dict key that cannot be a key") from e
        return out
    if isinstance(node, ast.BinOp):
        return _arith(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _call(node) if node.keywords else ast.unparse(node)
    if isinstance(node, ast.Subscript):
        return f"{ast.unparse(node.value)}[{ast.unparse(node.slice)}]"
    raise DecodeError(f"unsupported value {type(node).__name__}")


_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
}
_UNOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
          ast.Not: operator.not_}


def _arith(node: ast.AST) -> Any:
    """Constant arithmetic, as Python computes it, within size limits."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        vals = [_arith(v) for v in node.elts]
        return vals if isinstance(node, ast.List) else tuple(vals)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _apply(_UNOPS[type(node.op)], _arith(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(a, int) and isinstance(b, int) \
                and b > 0 and abs(a) > 1 and b * a.bit_length() > _MAX_NUMBER_BITS:
            raise DecodeError("a power too large to compute")
        if isinstance(node.op, ast.LShift) and isinstance(b, int) and b > _MAX_NUMBER_BITS:
            raise DecodeError("a shift too large to compute")
        if isinstance(node.op, ast.Mult) and _repeat_size(a, b) > _MAX_SEQ:
            raise DecodeError("a repetition too large to compute")
        return _apply(_BINOPS[type(node.op)], a, b)
    raise DecodeError(f"an expression that needs more than constants ({type(node).__name__})")


def _repeat_size(a: Any, b: Any) -> int:
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
            return len(seq) * max(n, 0)
    return 0


def _apply(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError, ArithmeticError) as e:
        raise DecodeError(f"arithmetic failed ({type(e).__name__})") from e


# ------------------------------------------------------------------------------ checking
_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "any": str,
}
_STRIP = re.compile(r"[ ,./\-_*^]")


def _std(s: str) -> str:
    return _STRIP.sub("", s).lower().replace("'", '"')


def _std_all(seq: Any) -> list:
    return [_std(x) if type(x) is str else x for x in seq]


def _allowed_type(options: list) -> type | None:
    for o in options:
        if o != "":
            return type(o)
    return None


def _type_ok(value: Any, options: list, expected: type, nested: type | None) -> tuple[bool, bool]:
    """(type acceptable, compare as a 'variable'). Array items are checked one level deep,
    against each allowed list in turn; an allowed value that is not a list passes them."""
    allowed = _allowed_type(options)
    variable = allowed is not None and allowed is not expected
    if type(value) is expected:
        if nested is None:
            return True, variable
        for o in options:
            if type(o) is list and not all(_type_ok(v, o, nested, None)[0] for v in value):
                continue
            return True, variable
        return False, False
    if allowed is not None and type(value) is allowed:
        return True, True
    return False, False


def _seq(o: Any) -> list | None:
    return list(o) if isinstance(o, (str, list, tuple)) else None


def _list_ok(value: list, options: list) -> bool:
    got = _std_all(value)
    for o in options:
        items = _seq(o)
        if items is not None and got == _std_all(items):
            return True
    return False


def _dict_ok(value: Any, options: list) -> bool:
    if not isinstance(value, dict):
        return False
    for o in options:
        if o == "" or not isinstance(o, dict):
            continue
        ok = True
        for k, v in value.items():
            allowed = _seq(o.get(k)) if k in o else None
            if allowed is None or (_std(v) if type(v) is str else v) not in _std_all(allowed):
                ok = False
                break
        if ok and all(k in value or (isinstance(v, (str, list, tuple)) and "" in v)
                      for k, v in o.items()):
            return True
    return False


def _list_of_dicts_ok(value: list, options: list) -> bool:
    for o in options:
        items = _seq(o)
        if items is None or len(items) != len(value):
            continue
        if all(_dict_ok(v, [d]) for v, d in zip(value, items, strict=True)):
            return True
    return False


def _check_call(doc: dict, call: dict, expected: dict) -> str | None:
    """None if ``call`` ({name: args}) fits ``expected`` ({name: {param: options}}) under
    function doc ``doc``, else why not."""
    allowed = next(iter(expected.values()))
    name = doc["name"]
    if name not in call:
        return f"function {name!r} not called (got {next(iter(call), '')!r})"
    args = call[name]
    spec = doc.get("parameters", {})
    props = spec.get("properties", {})
    for req in spec.get("required", []):
        if req not in args:
            return f"missing required parameter {req!r}"
    for p, v in args.items():
        if p not in props or p not in allowed:
            return f"unexpected parameter {p!r}"
        tname = props[p].get("type")
        if tname not in _TYPES:
            return f"parameter {p!r}: the doc's type {tname!r} is not one BFCL knows"
        expected_t = _TYPES[tname]
        nested = None
        if tname in ("array", "tuple"):
            nested = _TYPES.get(props[p].get("items", {}).get("type"))
            if nested is None:
                return f"parameter {p!r}: the doc gives no known item type"
        if tname == "tuple" and type(v) is tuple:
            v = list(v)
        if tname == "float" and type(v) is int:
            v = float(v)
        options = allowed[p]
        ok, variable = _type_ok(v, options, expected_t, nested)
        if not ok:
            return f"parameter {p!r}: wrong type {type(v).__name__} for {tname}"
        if not variable:
            if expected_t is dict:
                fits = _dict_ok(v, options)
            elif expected_t is list and nested is dict:
                fits = _list_of_dicts_ok(v, options)
            elif expected_t is str:
                fits = _std(v) in [_std(o) for o in options if type(o) is str]
            elif expected_t is list:
                fits = _list_ok(v, options)
            else:
                fits = v in options
        else:
            fits = v in options
        if not fits:
            return f"parameter {p!r}: value {v!r} not allowed"
    for p, options in allowed.items():
        if p not in args and "" not in options:
            return f"missing parameter {p!r}"
    return None


def _doc(functions: list[dict], name: str) -> dict | None:
    return next((f for f in functions if f.get("name") == name), None)


def check_decoded(category: str, functions: list[dict], calls: Decoded,
                  ground_truth: list[dict]) -> tuple[bool, str]:
    """The AST checker's verdict on decoded calls. Returns (correct, reason)."""
    if "parallel" in category:
        if len(calls) != len(ground_truth):
            return False, f"{len(calls)} call(s), expected {len(ground_truth)}"
        matched: set[int] = set()
        for i, exp in enumerate(ground_truth):
            doc = _doc(functions, next(iter(exp)))
            if doc is None:
                return False, f"expected call {i}: no function doc for {next(iter(exp))!r}"
            why = "no call left"
            for idx, call in enumerate(calls):
                if idx in matched:
                    continue
                why = _check_call(doc, call, exp)
                if why is None:
                    matched.add(idx)
                    break
            else:
                return False, f"expected call {i} not matched: {why}"
        return True, "ok"
    if len(calls) != len(ground_truth if "multiple" in category else [None]):
        return False, f"{len(calls)} call(s), expected {len(ground_truth)}"
    if "multiple" in category:
        doc = _doc(functions, next(iter(ground_truth[0])))
        if doc is None:
            return False, f"no function doc for {next(iter(ground_truth[0]))!r}"
    else:
        doc = functions[0]
    why = _check_call(doc, calls[0], ground_truth[0])
    return (True, "ok") if why is None else (False, why)


def score_reply(category: str, functions: list[dict], reply: str,
                ground_truth: list[dict]) -> tuple[bool, str, Decoded]:
    """Decode and check one reply. Returns (correct, reason, decoded calls)."""
    try:
        calls = decode_calls(reply)
    except DecodeError as e:
        if category == "irrelevance":
            return True, "no call", []
        return False, f"cannot decode: {e}", []
    if category == "irrelevance":
        return (not calls), ("no call" if not calls else f"made {len(calls)} call(s)"), calls
    ok, why = check_decoded(category, functions, calls, ground_truth)
    return ok, why, calls
