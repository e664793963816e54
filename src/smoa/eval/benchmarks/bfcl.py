"""BFCL (Berkeley Function-Calling Leaderboard), the single-turn AST categories.

Two scoring modes:

- ``official`` (the default; benchmarks ``bfcl``, ``bfcl-<category>``): the official
  ``bfcl-eval`` decoder and AST checker rules (``bfcl_official``), so that scores compare
  with the leaderboard. Only Python call syntax counts.
- ``lenient`` (benchmarks ``bfcl-lenient``, ``bfcl-lenient-<category>``; ``smoa eval
  --bfcl-mode lenient``): smoa's own, more forgiving reading, described below. Its scores
  are higher than the leaderboard's for the same replies and do not compare with it.

Lenient decoding (``parse_calls``) also takes JSON calls, calls fenced or inside prose,
positional arguments and ``_`` written for ``.`` in names. Lenient checking
(``check_calls``): the function name must match;
no parameter outside the allowed set; every required parameter present (an allowed value ``""``
means the parameter may be left out); each value must be one of the allowed values, after type
checks (an int is accepted for a float, a tuple for a list) and string standardisation
(case-insensitive, ignoring spaces and the characters ``,./-_*^``). Lists compare in order,
dicts key by key. Parallel categories need as many calls as expected, matched in any order.
``irrelevance`` is correct when the answer makes no call.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ..scoring import _FENCE_RE, _json_candidates, _loads_lenient
from .base import Benchmark, Item, Score, _slice, read_json_or_jsonl
from .bfcl_official import score_reply

__all__ = ["BFCL", "BFCL_CATEGORIES", "BFCL_MODES", "parse_calls", "check_calls", "calls_to_text"]

BFCL_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
BFCL_MODES = ("official", "lenient")

BFCL_INSTRUCTION = (
    "You have access to the functions described below as JSON. If the request can be done "
    "with them, reply with only the function call(s) in Python syntax, as a list such as "
    "[func_name(param1=value1, param2=value2)], using keyword arguments and literal values. "
    "Make several calls in the list if the request needs several. If none of the functions "
    "fits the request, do not call any: say so in plain words."
)

Call = tuple[str, dict[str, Any]]


# ---------------------------------------------------------------------------- parsing calls
def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        # not a literal (a variable, an expression): keep its source; it will not match
        return {"__expr__": ast.unparse(node)}


def _calls_from_ast(tree: ast.AST, params_of: dict[str, list[str]]) -> list[Call] | None:
    """Calls from a module made only of call expressions (or lists/tuples of them)."""
    if not isinstance(tree, ast.Module) or not tree.body:
        return None
    nodes: list[ast.AST] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return None
        v = stmt.value
        nodes.extend(v.elts if isinstance(v, (ast.List, ast.Tuple)) else [v])
    calls: list[Call] = []
    for n in nodes:
        if not isinstance(n, ast.Call):
            return None
        name = _dotted(n.func)
        if name is None:
            return None
        args: dict[str, Any] = {}
        order = params_of.get(_canonical_name(name, params_of) or name, [])
        for i, a in enumerate(n.args):
            key = order[i] if i < len(order) else f"__pos{i}"
            args[key] = _literal(a)
        for kw in n.keywords:
            if kw.arg is None:  # **kwargs
                val = _literal(kw.value)
                if isinstance(val, dict) and "__expr__" not in val:
                    args.update(val)
                else:
                    args["__kwargs__"] = val
            else:
                args[kw.arg] = _literal(kw.value)
        calls.append((name, args))
    return calls


def _try_python(text: str, params_of: dict[str, list[str]]) -> list[Call] | None:
    src = text.strip()
    if not src or len(src) > 20000:
        return None
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return _calls_from_ast(tree, params_of)


def _calls_from_json(obj: Any) -> list[Call] | None:
    items = obj if isinstance(obj, list) else [obj]
    calls: list[Call] = []
    for it in items:
        if not isinstance(it, dict):
            return None
        if "function" in it and isinstance(it["function"], dict):  # OpenAI tool_call shape
            it = it["function"]
        name = it.get("name") or it.get("function") or it.get("func")
        if isinstance(name, str):
            args = it.get("arguments", it.get("parameters", it.get("args", {})))
            if isinstance(args, str):
                args = _loads_lenient(args)
            if not isinstance(args, dict):
                return None
            calls.append((name, args))
        elif len(it) == 1 and isinstance(next(iter(it.values())), dict):  # {"f": {...}}
            (name, args), = it.items()
            calls.append((name, args))
        else:
            return None
    return calls


def _canonical_name(name: str, params_of: dict[str, list[str]]) -> str | None:
    if name in params_of:
        return name
    for known in params_of:  # tool APIs often forbid '.', so models write '_' instead
        if known.replace(".", "_") == name or known.split(".")[-1] == name and "." in known:
            return known
    return None


def _balanced_paren(text: str, start: int) -> int | None:
    depth, in_str, quote, esc = 0, False, "", False
    for j in range(start, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                in_str = False
        elif c in "\"'":
            in_str, quote = True, c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def parse_calls(text: str, functions: list[dict] | None = None) -> list[Call]:
    """Function calls in a model answer: Python call syntax or JSON, fenced or in prose.

    ``functions`` (the item's function docs) gives the known names, the order used for
    positional arguments, and lets calls be found inside prose. Names written with '_' for
    '.' are mapped back to the documented name.
    """
    functions = functions or []
    params_of = {f["name"]: list(f.get("parameters", {}).get("properties", {})) for f in functions}
    text = text or ""
    blocks = [b for _, b in _FENCE_RE.findall(text)]
    stripped = re.sub(r"^\s*(?:<\w+>|\[TOOL_CALLS\])\s*", "", text.strip())
    for cand in [*blocks, stripped]:
        got = _try_python(cand, params_of)
        if got is None:
            obj = _loads_lenient(cand) if cand.lstrip()[:1] in "[{" else None
            got = _calls_from_json(obj) if obj is not None else None
        if got:
            return [(_canonical_name(n, params_of) or n, a) for n, a in got]
    # calls embedded in prose: look for the documented names followed by '('
    found: list[Call] = []
    if params_of:
        alts = set()
        for n in params_of:
            alts.add(re.escape(n))
            alts.add(re.escape(n.replace(".", "_")))
        pat = re.compile(r"(?<![\w.])(" + "|".join(sorted(alts, key=len, reverse=True)) + r")\s*\(")
        pos = 0
        while True:
            m = pat.search(text, pos)
            if not m:
                break
            end = _balanced_paren(text, m.end() - 1)
            if end is None:
                pos = m.end()
                continue
            got = _try_python(text[m.start():end], params_of)
            if got:
                found.extend((_canonical_name(n, params_of) or n, a) for n, a in got)
            pos = end
    if found:
        return found
    # JSON objects in prose
    for cand in _json_candidates(text)[1:]:
        obj = _loads_lenient(cand)
        got = _calls_from_json(obj) if obj is not None else None
        if got and all(_canonical_name(n, params_of) for n, _ in got):
            found.extend((_canonical_name(n, params_of) or n, a) for n, a in got)
    return found


# --------------------------------------------------------------------------- checking calls
_STRIP_CHARS = re.compile(r"[\s,./\-_*^]")


def _std(s: str) -> str:
    return _STRIP_CHARS.sub("", s).lower()


def _type_ok(value: Any, ptype: str | None) -> bool:
    if ptype in (None, "any"):
        return True
    if ptype == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if ptype == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ptype == "string":
        return isinstance(value, str)
    if ptype == "boolean":
        return isinstance(value, bool)
    if ptype in ("array", "tuple"):
        return isinstance(value, (list, tuple))
    if ptype == "dict":
        return isinstance(value, dict)
    return True


def _eq(value: Any, option: Any) -> bool:
    if isinstance(option, dict):
        if not isinstance(value, dict) or "__expr__" in value:
            return False
        if any(k not in option for k in value):
            return False
        for k, opts in option.items():
            opts = opts if isinstance(opts, list) else [opts]
            if k in value:
                if not any(_eq(value[k], o) for o in opts if o != ""):
                    return False
            elif "" not in opts:
                return False
        return True
    if isinstance(option, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(option):
            return False
        return all(_eq(v, o) for v, o in zip(value, option, strict=True))
    if isinstance(option, str):
        return isinstance(value, str) and _std(value) == _std(option)
    if isinstance(option, bool):
        return isinstance(value, bool) and value == option
    if isinstance(option, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == option
    return value == option


def _check_one(call: Call, expected: dict[str, dict[str, list]], docs: dict[str, dict]) -> str | None:
    """None if ``call`` satisfies the expected {name: {param: options}}, else why not."""
    name, args = call
    (exp_name, exp_args), = expected.items()
    if name != exp_name:
        return f"wrong function {name!r} (expected {exp_name!r})"
    doc = docs.get(name, {}).get("parameters", {})
    props = doc.get("properties", {})
    for req in doc.get("required", []):
        if req not in args:
            return f"missing required parameter {req!r}"
    for k in args:
        if k not in exp_args:
            return f"unexpected parameter {k!r}"
    for k, options in exp_args.items():
        if k not in args:
            if "" not in options:
                return f"missing parameter {k!r}"
            continue
        v = args[k]
        ptype = props.get(k, {}).get("type")
        literal = any(type(v) is type(o) and v == o for o in options if o != "")
        if literal:  # listed verbatim among the allowed values (even against the doc's type)
            continue
        if not _type_ok(v, ptype):
            return f"parameter {k!r}: wrong type {type(v).__name__} for {ptype}"
        if not any(_eq(v, o) for o in options if o != ""):
            return f"parameter {k!r}: value {v!r} not allowed"
    return None


def check_calls(calls: list[Call], ground_truth: list[dict], functions: list[dict]) -> tuple[bool, str]:
    """Apply the rules above. Returns (correct, reason)."""
    docs = {f["name"]: f for f in functions}
    if len(calls) != len(ground_truth):
        return False, f"{len(calls)} call(s), expected {len(ground_truth)}"
    unmatched = list(range(len(ground_truth)))
    reasons = []
    for call in calls:
        for idx in unmatched:
            why = _check_one(call, ground_truth[idx], docs)
            if why is None:
                unmatched.remove(idx)
                break
            reasons.append(why)
        else:
            return False, reasons[-1] if reasons else "no match"
    return True, "ok"


def _concrete(o: Any) -> Any:
    """An allowed value with nested option lists (inside dicts) resolved to their first."""
    if isinstance(o, dict):
        inner = {}
        for k, v in o.items():
            has, val = _first_option(v if isinstance(v, list) else [v])
            if has:
                inner[k] = val
        return inner
    if isinstance(o, list):
        return [_concrete(x) for x in o]
    return o


def _first_option(options: list) -> tuple[bool, Any]:
    for o in options:
        if o != "":
            return True, _concrete(o)
    return False, None


def calls_to_text(ground_truth: list[dict], functions: list[dict] | None = None) -> str:
    """Ground truth -> call text ``[f(a=1), g(b='x')]`` using the first allowed values.

    With ``functions`` (the item's docs), an optional parameter that the function's doc
    lacks is left out (one BFCL answer lists one; the official checker rejects it)."""
    props = {f["name"]: f.get("parameters", {}).get("properties", {}) for f in functions or []}
    parts = []
    for entry in ground_truth:
        (name, params), = entry.items()
        args = []
        for k, options in params.items():
            if name in props and k not in props[name] and "" in options:
                continue
            has, val = _first_option(options)
            if has:
                args.append(f"{k}={val!r}")
        parts.append(f"{name}({', '.join(args)})")
    return "[" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------------- benchmark
class BFCL(Benchmark):
    name = "bfcl"
    folder = "bfcl"
    filename = None
    description = "BFCL v4 AST categories (simple_python, multiple, parallel, " \
                  "parallel_multiple, irrelevance): function-call accuracy."

    def __init__(self, categories: tuple[str, ...] = BFCL_CATEGORIES, name: str | None = None,
                 mode: str = "official"):
        bad = [c for c in categories if c not in BFCL_CATEGORIES]
        if bad:
            raise ValueError(f"unknown BFCL categories {bad}; known: {list(BFCL_CATEGORIES)}")
        if mode not in BFCL_MODES:
            raise ValueError(f"unknown BFCL mode {mode!r}; known: {', '.join(BFCL_MODES)}")
        self.categories = tuple(categories)
        self.mode = mode
        if name:
            self.name = name  # type: ignore[misc]
        if mode == "lenient":
            self.description = self.description.replace(
                "function-call accuracy.", "function-call accuracy, smoa's lenient reading "
                "(not comparable with the leaderboard).")

    def _looks_like_folder(self, folder: Path) -> bool:
        return any((folder / f"BFCL_v4_{c}.json").is_file() for c in self.categories)

    def load(self, path=None, limit: int | None = None, offset: int = 0) -> list[Item]:
        """``limit``/``offset`` apply to each category separately."""
        root = self.resolve(path)
        items: list[Item] = []
        for cat in self.categories:
            items.extend(_slice(self._load_category(root, cat), limit, offset))
        return items

    def _load_category(self, root: Path, cat: str) -> list[Item]:
        questions = read_json_or_jsonl(root / f"BFCL_v4_{cat}.json")
        answers: dict[str, list] = {}
        ans_path = root / "possible_answer" / f"BFCL_v4_{cat}.json"
        if cat != "irrelevance":
            answers = {r["id"]: r["ground_truth"] for r in read_json_or_jsonl(ans_path)}
        items = []
        for q in questions:
            turns = q["question"][0] if q["question"] else []
            user = "\n".join(m["content"] for m in turns if m.get("role") == "user")
            system = "\n".join(m["content"] for m in turns if m.get("role") == "system")
            funcs = q["function"]
            prompt = (f"{BFCL_INSTRUCTION}\n\nFunctions:\n{json.dumps(funcs, indent=1)}\n\n"
                      + (f"{system}\n\n" if system else "") + f"Request: {user}")
            items.append(Item(
                id=q["id"], prompt=prompt,
                reference=answers.get(q["id"], []),
                meta={"category": cat, "functions": funcs, "messages": turns},
            ))
        return items

    def score(self, item: Item, answer_text: str) -> Score:
        funcs = item.meta["functions"]
        if self.mode == "official":
            ok, why, decoded = score_reply(item.meta["category"], funcs, answer_text or "",
                                           item.reference)
            return Score(1.0 if ok else 0.0, ok, {
                "category": item.meta["category"], "reason": why, "mode": "official",
                "calls": [[n, _jsonable(a)] for c in decoded for n, a in c.items()],
            })
        calls = parse_calls(answer_text or "", funcs)
        if item.meta["category"] == "irrelevance":
            ok = not calls
            why = "no call" if ok else f"made {len(calls)} call(s)"
        else:
            ok, why = check_calls(calls, item.reference, funcs)
        return Score(1.0 if ok else 0.0, ok, {
            "category": item.meta["category"], "reason": why, "mode": "lenient",
            "calls": [[n, _jsonable(a)] for n, a in calls],
        })


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x, allow_nan=False)
        return x
    except (TypeError, ValueError):
        return repr(x)
