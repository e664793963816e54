"""Execution-scored code sets: HumanEval and MBPP (run in :mod:`smoa.eval.sandbox`)."""

from __future__ import annotations

import re
from pathlib import Path

from ..sandbox import SandboxResult, SandboxUnavailable, arun_python, capabilities, run_python
from ..scoring import extract_code
from .base import Benchmark, Item, Score, read_jsonl

__all__ = ["HumanEval", "MBPP", "humaneval_parts", "humaneval_program", "mbpp_parts",
           "mbpp_program"]

HUMANEVAL_INSTRUCTION = (
    "Complete the Python function below. Reply with the complete function (including its "
    "signature and any imports it needs) in a single ```python code block."
)
MBPP_INSTRUCTION = (
    "Write a Python function for the task below. Reply with the code in a single ```python "
    "code block. Use the function name and arguments that the example tests call."
)


def humaneval_parts(item: Item, answer_text: str) -> tuple[str, str]:
    """Model answer -> (code, tests): the prompt stub with the model's code, then the tests.

    The sandbox runs the tests after the code, in a copy of its namespace, and counts a pass
    only when the tests' last statement (``check(entry_point)``) returned.
    """
    entry = item.meta["entry_point"]
    code = extract_code(answer_text or "", entry_point=entry)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        # A full function: keep the prompt first (imports and helper functions it defines),
        # then let the model's definition replace the stub.
        body = item.meta["prompt"] + "\n    pass\n\n" + code
    else:
        body = item.meta["prompt"] + code  # a bare body that continues the prompt
    return f"{body}\n", f"{item.reference}\n\ncheck({entry})\n"


def mbpp_parts(item: Item, answer_text: str) -> tuple[str, str]:
    """Model answer -> (code, tests): setup code and the model's code, then the asserts."""
    code = extract_code(answer_text or "")
    setup = item.meta.get("test_setup_code") or ""
    return f"{setup}\n{code}\n", "\n".join(item.reference) + "\n"


def humaneval_program(item: Item, answer_text: str) -> str:
    """The code and tests as one program (to read or to run elsewhere)."""
    return "\n".join(humaneval_parts(item, answer_text))


def mbpp_program(item: Item, answer_text: str) -> str:
    return "\n".join(mbpp_parts(item, answer_text))


def _code_score(res: SandboxResult, code: str, tests: str) -> Score:
    ok = res.status == "passed"
    return Score(1.0 if ok else 0.0, ok, {
        "status": res.status,
        "why": res.detail,
        "returncode": res.returncode,
        "duration_s": round(res.duration_s, 3),
        "stderr_tail": res.stderr_tail[-1500:],
        "stdout_tail": res.stdout_tail[-500:],
        "program_chars": len(code) + len(tests),
    })


class _CodeBenchmark(Benchmark):
    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def parts(self, item: Item, answer_text: str) -> tuple[str, str]:  # pragma: no cover
        raise NotImplementedError

    def check_ready(self) -> None:
        """Raise :class:`SandboxUnavailable` (one line: what to install) before any work."""
        caps = capabilities()
        if not caps["bwrap"]:
            raise SandboxUnavailable(f"{self.name} needs the code sandbox: {caps['reason']}")

    def program(self, item: Item, answer_text: str) -> str:
        return "\n".join(self.parts(item, answer_text))

    def score(self, item: Item, answer_text: str) -> Score:
        code, tests = self.parts(item, answer_text)
        res = run_python(code, self.timeout_s, self.memory_mb, tests=tests)
        return _code_score(res, code, tests)

    async def ascore(self, item: Item, answer_text: str) -> Score:
        code, tests = self.parts(item, answer_text)
        res = await arun_python(code, self.timeout_s, self.memory_mb, tests=tests)
        return _code_score(res, code, tests)


class HumanEval(_CodeBenchmark):
    name = "humaneval"
    folder = "humaneval"
    filename = "HumanEval.jsonl.gz"
    description = "HumanEval (164 Python functions); pass@1 by running the unit tests."

    def resolve(self, path=None) -> Path:
        try:
            return super().resolve(path)
        except FileNotFoundError:
            if path is not None:  # an uncompressed copy
                for c in (Path(path) / self.folder / "HumanEval.jsonl", Path(path) /
                          "HumanEval.jsonl"):
                    if c.is_file():
                        return c
            raise

    def _load(self, path: Path) -> list[Item]:
        items = []
        for row in read_jsonl(path):
            items.append(Item(
                id=row["task_id"],
                prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{row['prompt']}```",
                reference=row["test"],
                meta={"entry_point": row["entry_point"], "prompt": row["prompt"],
                      "canonical_solution": row["canonical_solution"]},
            ))
        return items

    def parts(self, item: Item, answer_text: str) -> tuple[str, str]:
        return humaneval_parts(item, answer_text)


class MBPP(_CodeBenchmark):
    name = "mbpp"
    folder = "mbpp"
    filename = "mbpp_test_11-510.jsonl"
    description = "MBPP test split (task_id 11-510); pass if all listed asserts pass."

    def resolve(self, path=None) -> Path:
        try:
            return super().resolve(path)
        except FileNotFoundError:
            if path is not None:  # the full file: the test split is taken from it in _load
                for c in (Path(path) / self.folder / "mbpp.jsonl", Path(path) / "mbpp.jsonl"):
                    if c.is_file():
                        return c
            raise

    def _load(self, path: Path) -> list[Item]:
        rows = read_jsonl(path)
        if path.name == "mbpp.jsonl":
            rows = [r for r in rows if 11 <= int(r["task_id"]) <= 510]
        items = []
        for row in rows:
            tests = "\n".join(row["test_list"])
            items.append(Item(
                id=f"mbpp/{row['task_id']}",
                prompt=f"{MBPP_INSTRUCTION}\n\nTask: {row['text'].strip()}\n\n"
                       f"Your code must pass these tests:\n{tests}",
                reference=list(row["test_list"]),
                meta={"task_id": row["task_id"], "code": row["code"],
                      "test_setup_code": row.get("test_setup_code", ""),
                      "challenge_test_list": row.get("challenge_test_list", [])},
            ))
        return items

    def parts(self, item: Item, answer_text: str) -> tuple[str, str]:
        return mbpp_parts(item, answer_text)
