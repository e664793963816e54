"""BFCL agreement with the official checker: a bank of replies, and the official verdicts.

The bank is built from the BFCL data in ``../shared/data/bfcl`` (nothing is copied into the
repository): for every item of the five AST categories, the gold call and perturbed versions
of it (values changed, parameters dropped or added, other types, other layouts: fenced, in
prose, JSON, positional arguments, ``_`` for ``.``), chosen deterministically per item.

The official verdicts come from the real ``bfcl-eval`` package, installed without its
dependencies in a side folder (``make test`` puts it in ``.cache/bfcl-eval``;
``$SMOA_BFCL_REF`` overrides) and run in a child process: its reply decoder
(``default_decode_ast_prompting``, what BFCL uses for prompting models) and its
``ast_checker``, with the checker's import of the model-handler registry replaced by a stub
(the registry only says whether a model writes ``_`` for ``.``; ours does not).

Run as a script, it prints the agreement figures of BENCHMARKS.md::

    PYTHONPATH=src python tests/eval/bfcl_reference.py [--data ../shared/data/bfcl]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
BFCL_EVAL_VERSION = "2026.3.23"


def reference_dir() -> Path:
    return Path(os.environ.get("SMOA_BFCL_REF") or REPO / ".cache" / "bfcl-eval")


def data_dir() -> Path:
    env = os.environ.get("SMOA_DATA_DIR")
    base = Path(env) if env else (REPO / ".." / "shared" / "data").resolve()
    return base / "bfcl"


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_items(folder: Path) -> list[dict]:
    items = []
    for cat in CATEGORIES:
        answers = {}
        if cat != "irrelevance":
            answers = {r["id"]: r["ground_truth"] for r in _read(folder / "possible_answer" / f"BFCL_v4_{cat}.json")}
        for q in _read(folder / f"BFCL_v4_{cat}.json"):
            items.append({"id": q["id"], "category": cat, "functions": q["function"],
                          "answer": answers.get(q["id"], [])})
    return items


# ------------------------------------------------------------------------------ the bank
def _pick(options: list, last: bool) -> tuple[bool, Any]:
    vals = [o for o in options if o != ""]
    if not vals:
        return False, None
    v = vals[-1] if last else vals[0]
    if isinstance(v, dict):  # nested allowed values: {key: [options]}
        v = {k: _pick(o if isinstance(o, list) else [o], last)[1] for k, o in v.items()
             if _pick(o if isinstance(o, list) else [o], last)[0]}
    return True, v


def _gold(answer: list[dict], last: bool = False, drop_optional: bool = False) -> list[list]:
    calls = []
    for entry in answer:
        (name, params), = entry.items()
        args = {}
        for k, options in params.items():
            if drop_optional and "" in options:
                continue
            has, v = _pick(options, last)
            if has:
                args[k] = v
        calls.append([name, args])
    return calls


def _py(calls: list[list], brackets: bool = True, sep: str = ", ") -> str:
    body = sep.join(f"{n}({', '.join(f'{k}={v!r}' for k, v in a.items())})" for n, a in calls)
    return f"[{body}]" if brackets else body


def _positional(calls: list[list]) -> str:
    return "[" + ", ".join(f"{n}({', '.join(repr(v) for v in a.values())})" for n, a in calls) + "]"


def _json(calls: list[list]) -> str:
    return json.dumps([{"name": n, "arguments": a} for n, a in calls])


def _perturb_value(v: Any, rng: random.Random) -> list[tuple[str, Any, bool]]:
    """(kind, new value, render as a bare name) alternatives for one value."""
    out: list[tuple[str, Any, bool]] = []
    if isinstance(v, bool):
        out += [("bool-flip", not v, False), ("bool-as-int", int(v), False), ("bool-as-str", str(v), False)]
    elif isinstance(v, int):
        out += [("int+1", v + 1, False), ("int-as-float", float(v), False), ("int-as-str", str(v), False),
                ("int-negated", -v, False)]
    elif isinstance(v, float):
        out += [("float-changed", v * 1.5 + 1, False), ("float-as-str", str(v), False)]
        if v.is_integer():
            out.append(("float-as-int", int(v), False))
    elif isinstance(v, str):
        out += [("str-upper", v.upper(), False), ("str-extra", v + " extra", False),
                ("str-tab", v.replace(" ", "\t", 1) if " " in v else v + "\tx", False),
                ("str-underscores", v.replace(" ", "_"), False), ("str-quote", v + "'s", False)]
        if v.isidentifier():
            out.append(("str-as-name", v, True))
    elif isinstance(v, list):
        out += [("list-as-tuple", tuple(v), False), ("list-reversed", list(reversed(v)), False),
                ("list-shorter", v[:-1], False)]
        if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            out.append(("int-list-as-floats", [float(x) for x in v], False))
        if v and all(isinstance(x, str) for x in v):
            out.append(("str-list-upper", [x.upper() for x in v], False))
    elif isinstance(v, dict) and v:
        k = sorted(v)[0]
        out += [("dict-key-dropped", {x: y for x, y in v.items() if x != k}, False),
                ("dict-extra-key", {**v, "zz_extra": 1}, False)]
        sub = _perturb_value(v[k], rng)
        if sub:
            kind, nv, _ = rng.choice(sub)
            out.append((f"dict-{kind}", {**v, k: nv}, False))
    return out


def _render_with(calls: list[list], ci: int, key: str, value: Any, as_name: bool) -> str:
    parts = []
    for i, (n, a) in enumerate(calls):
        args = []
        for k, v in a.items():
            if i == ci and k == key:
                args.append(f"{k}={value}" if as_name else f"{k}={value!r}")
            else:
                args.append(f"{k}={v!r}")
        parts.append(f"{n}({', '.join(args)})")
    return "[" + ", ".join(parts) + "]"


def replies_for(item: dict, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, reply) pairs for one item."""
    funcs = item["functions"]
    names = [f["name"] for f in funcs]
    if item["category"] == "irrelevance":
        f = funcs[0]
        props = f.get("parameters", {}).get("properties", {})
        dummy = {"string": "x", "integer": 1, "float": 1.0, "boolean": True, "array": [], "tuple": [],
                 "dict": {}, "any": "x"}
        args = {p: dummy.get(props[p].get("type"), "x") for p in f.get("parameters", {}).get("required", [])
                if p in props}
        call = [[f["name"], args]]
        return [("empty", ""), ("prose", "None of these functions can answer that."), ("empty-list", "[]"),
                ("call", _py(call)), ("call-bare", _py(call, brackets=False)), ("json", _json(call)),
                ("fenced-python", f"```python\n{_py(call)}\n```"), ("fenced", f"```\n{_py(call)}\n```"),
                ("prose-call", f"I would call {_py(call, brackets=False)} but it does not fit."),
                ("no-args", f"[{f['name']}()]")]
    gold = _gold(item["answer"])
    out = [("gold", _py(gold)), ("gold-alt", _py(_gold(item["answer"], last=True, drop_optional=True))),
           ("no-brackets", _py(gold, brackets=False)), ("multiline", "[\n  " + _py(gold, False, ",\n  ") + "\n]"),
           ("fenced", f"```\n{_py(gold)}\n```"), ("fenced-python", f"```python\n{_py(gold)}\n```"),
           ("prose-before", f"Here is the call: {_py(gold)}"), ("json", _json(gold)),
           ("positional", _positional(gold)), ("quoted", f"'{_py(gold)}'"),
           ("empty", ""), ("empty-list", "[]"), ("prose", "I cannot do that with these functions.")]
    if any("." in n for n, _ in gold):
        out.append(("underscores", _py([[n.replace(".", "_"), a] for n, a in gold])))
    other = [n for n in names if n not in {c[0] for c in gold}]
    out.append(("wrong-name", _py([[other[0] if other else gold[0][0] + "_v2", gold[0][1]], *gold[1:]])))
    out.append(("extra-param", _py([[gold[0][0], {**gold[0][1], "zz_extra": 1}], *gold[1:]])))
    if len(gold) > 1:
        sh = gold[:]
        rng.shuffle(sh)
        out += [("shuffled", _py(sh)), ("one-dropped", _py(gold[:-1])), ("duplicated", _py([gold[0], *gold]))]
    else:
        out.append(("doubled", _py([gold[0], gold[0]])))
    # parameter-level changes, on a few parameters chosen by the item's own generator
    slots = [(ci, k) for ci, (_, a) in enumerate(gold) for k in a]
    rng.shuffle(slots)
    for ci, k in slots[:3]:
        n, a = gold[ci]
        dropped = [c if i != ci else [n, {x: y for x, y in a.items() if x != k}] for i, c in enumerate(gold)]
        out.append(("param-dropped", _py(dropped)))
        v = a[k]
        if isinstance(v, int) and not isinstance(v, bool) and v > 1:
            out.append(("arithmetic", _render_with(gold, ci, k, f"{v - 1} + 1", True)))
        alts = _perturb_value(v, rng)
        for kind, nv, as_name in rng.sample(alts, min(4, len(alts))):
            out.append((kind, _render_with(gold, ci, k, nv, as_name)))
    out.append(("kwargs-splat", f"[{gold[0][0]}(**{gold[0][1]!r})]"))
    return out


def build_bank(items: list[dict], seed: int = 11) -> list[dict]:
    """[{item (index), kind, reply}] for every item; the same on every run."""
    bank = []
    for idx, item in enumerate(items):
        rng = random.Random(f"{seed}:{item['id']}")
        for kind, reply in replies_for(item, rng):
            bank.append({"item": idx, "kind": kind, "reply": reply})
    return bank


# ------------------------------------------------------------------------- official verdicts
def official_verdicts(items: list[dict], bank: list[dict], timeout_s: float = 900) -> list[Any]:
    """The real bfcl-eval's verdict on each reply (True/False, or 'crash: ...' where the
    package raised instead of judging); each bank entry gets ``upstream_decoded``, the calls
    upstream decoded (None where it could not). Raises FileNotFoundError without the package."""
    ref = reference_dir()
    if not (ref / "bfcl_eval" / "eval_checker" / "ast_eval" / "ast_checker.py").is_file():
        raise FileNotFoundError(f"bfcl-eval {BFCL_EVAL_VERSION} is not installed in {ref}: run `make test` "
                                f"(or pip install --no-deps --target {ref} bfcl-eval=={BFCL_EVAL_VERSION} "
                                "filelock tenacity)")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "bank.json"
        plain = [{k: e[k] for k in ("item", "kind", "reply")} for e in bank]
        req.write_text(json.dumps({"items": items, "bank": plain}), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ref), "BFCL_PROJECT_ROOT": tmp}
        proc = subprocess.run([sys.executable, __file__, "--upstream", str(req)], env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"the bfcl-eval run failed: {proc.stderr[-2000:]}")
        out = json.loads((Path(tmp) / "verdicts.json").read_text(encoding="utf-8"))
    for e, d in zip(bank, out["decoded"], strict=True):
        e["upstream_decoded"] = None if d is None else _decode(d)
    return out["verdicts"]


def _upstream_main(req_path: str) -> None:
    """Child process: judge the bank with the installed bfcl-eval (no smoa import here)."""
    import types

    class _Cfg:
        underscore_to_dot = False

    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = type("M", (dict,), {"__missing__": lambda self, k: _Cfg()})()  # type: ignore[attr-defined]
    sys.modules["bfcl_eval.constants.model_config"] = stub
    for lang in ("java", "js"):  # tree-sitter parsers, used for Java/JavaScript replies only
        m = types.ModuleType(f"bfcl_eval.model_handler.parser.{lang}_parser")
        setattr(m, f"parse_{'javascript' if lang == 'js' else 'java'}_function_call", None)
        sys.modules[m.__name__] = m

    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting
    from bfcl_eval.utils import is_empty_output, is_function_calling_format_output

    data = json.loads(Path(req_path).read_text(encoding="utf-8"))
    items = data["items"]
    verdicts: list[Any] = []
    decoded_calls: list[Any] = []  # what upstream decoded, where it did (for the checker-only figure)
    for entry in data["bank"]:
        item = items[entry["item"]]
        cat = item["category"]
        try:
            decoded = default_decode_ast_prompting(entry["reply"])
        except Exception:  # noqa: BLE001 - upstream's rule: a reply it cannot decode has no call
            verdicts.append(cat == "irrelevance")
            decoded_calls.append(None)
            continue
        decoded_calls.append(_encode(decoded) if is_function_calling_format_output(decoded) else None)
        if cat == "irrelevance":
            verdicts.append(bool(is_empty_output(decoded)))
            continue
        if not is_function_calling_format_output(decoded):
            verdicts.append(False)
            continue
        try:
            res = ast_checker(item["functions"], decoded, item["answer"], Language.PYTHON, cat, "smoa")
            verdicts.append(bool(res["valid"]))
        except Exception as e:  # noqa: BLE001 - upstream raised instead of judging
            verdicts.append(f"crash: {type(e).__name__}: {e}")
    out = {"verdicts": verdicts, "decoded": decoded_calls}
    (Path(req_path).parent / "verdicts.json").write_text(json.dumps(out), encoding="utf-8")


def _encode(x: Any) -> Any:
    """JSON with tuples, non-string keys and odd constants kept (decoded by ``_decode``)."""
    if isinstance(x, tuple):
        return {"__t": [_encode(v) for v in x]}
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if isinstance(x, dict):
        return {"__d": [[_encode(k), _encode(v)] for k, v in x.items()]}
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return {"__r": repr(x)}


def _decode(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if isinstance(x, dict):
        if "__t" in x:
            return tuple(_decode(v) for v in x["__t"])
        if "__d" in x:
            return {_decode(k): _decode(v) for k, v in x["__d"]}
        import ast

        return ast.literal_eval(x["__r"])
    return x


# ------------------------------------------------------------------------------ agreement
def smoa_verdicts(items: list[dict], bank: list[dict], mode: str) -> list[bool]:
    from smoa.eval.benchmarks import BFCL
    from smoa.eval.benchmarks.base import Item

    benches = {c: BFCL((c,), mode=mode) for c in CATEGORIES}
    objs = [Item(id=it["id"], prompt="", reference=it["answer"],
                 meta={"category": it["category"], "functions": it["functions"]}) for it in items]
    return [bool(benches[items[e["item"]]["category"]].score(objs[e["item"]], e["reply"]).correct)
            for e in bank]


def checker_only(items: list[dict], bank: list[dict], official: list[Any], mode: str) -> dict[str, Any]:
    """Agreement of smoa's checker with upstream's on the calls upstream decoded (replies of
    the AST categories that upstream could decode): the checking rules alone."""
    from smoa.eval.benchmarks.bfcl import check_calls
    from smoa.eval.benchmarks.bfcl_official import check_decoded

    agree = n = 0
    for e, o in zip(bank, official, strict=True):
        item = items[e["item"]]
        calls = e.get("upstream_decoded")
        if item["category"] == "irrelevance" or calls is None or not isinstance(o, bool):
            continue
        if mode == "official":
            mine = check_decoded(item["category"], item["functions"], calls, item["answer"])[0]
        else:
            mine = check_calls([next(iter(c.items())) for c in calls], item["answer"], item["functions"])[0]
        n += 1
        agree += mine == o
    return {"decoded_replies": n, "agree": agree, "rate": agree / n if n else 0.0}


def agreement(items: list[dict], bank: list[dict], official: list[Any], mine: list[bool]) -> dict[str, Any]:
    judged = [(e, o, m) for e, o, m in zip(bank, official, mine, strict=True) if isinstance(o, bool)]
    agree = sum(o == m for _, o, m in judged)
    by_kind: dict[str, list[int]] = {}
    for e, o, m in judged:
        by_kind.setdefault(e["kind"], [0, 0])
        by_kind[e["kind"]][0] += o == m
        by_kind[e["kind"]][1] += 1
    return {
        "replies": len(bank), "items": len(items), "judged": len(judged),
        "upstream_crashes": len(bank) - len(judged), "agree": agree,
        "rate": agree / len(judged) if judged else 0.0,
        "smoa_accepts_upstream_rejects": sum(m and not o for _, o, m in judged),
        "smoa_rejects_upstream_accepts": sum(o and not m for _, o, m in judged),
        "upstream_accepts": sum(bool(o) for _, o, _ in judged),
        "disagreeing_kinds": {k: f"{a}/{n}" for k, (a, n) in sorted(by_kind.items()) if a != n},
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--upstream"]:
        _upstream_main(argv[1])
        return
    folder = Path(argv[argv.index("--data") + 1]) if "--data" in argv else data_dir()
    items = load_items(folder)
    bank = build_bank(items)
    official = official_verdicts(items, bank)
    for mode in ("official", "lenient"):
        res = agreement(items, bank, official, smoa_verdicts(items, bank, mode))
        print(f"mode={mode}, end to end (each its own decoder): {json.dumps(res, indent=1)}")
        res = checker_only(items, bank, official, mode)
        print(f"mode={mode}, checker only (upstream's decoded calls): {json.dumps(res)}")


if __name__ == "__main__":
    main(sys.argv[1:])
