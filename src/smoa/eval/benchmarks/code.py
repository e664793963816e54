"""Execution-scored code sets: HumanEval and MBPP (run in :mod:`smoa.eval.sandbox`)."""

from __future__ import annotations

import re
from pathlib import Path

from ..sandbox import SandboxResult, arun_python, run_python
from ..scoring import extract_code
from .base import Benchmark, Item, Score, read_jsonl

__all__ = ["HumanEval", "MBPP", "humaneval_program", "mbpp_program"]

HUMANEVAL_INSTRUCTION = (
    "Complete the Python function below. Reply with the complete function (including its "
    "signature and any imports it needs) in a single ```python code block."
)
MBPP_INSTRUCTION = (
    "Write a Python function for the task below. Reply with the code in a single ```python "
    "code block. Use the function name and arguments that the example tests call."
)


def humaneval_program(item: Item, answer_text: str) -> str:
    """Model answer -> the program to run: prompt stub, the model's code, tests, check()."""
    entry = item.meta["entry_point"]
    code = extract_code(answer_text or "", entry_point=entry)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        # A full function: keep the prompt first (imports and helper functions it defines),
        # then let the model's definition replace the stub.
        body = item.meta["prompt"] + "\n    pass\n\n" + code
    else:
        body = item.meta["prompt"] + code  # a bare body that continues the prompt
    return f"{body}\n\n{item.reference}\n\ncheck({entry})\n"


def mbpp_program(item: Item, answer_text: str) -> str:
    code = extract_code(answer_text or "")
    setup = item.meta.get("test_setup_code") or ""
    tests = "\n".join(item.reference)
    return f"{setup}\n{code}\n\n{tests}\n"


def _code_score(res: SandboxResult, program: str) -> Score:
    ok = res.status == "passed"
    return Score(1.0 if ok else 0.0, ok, {
        "status": res.status,
        "returncode": res.returncode,
        "duration_s": round(res.duration_s, 3),
        "stderr_tail": res.stderr_tail[-1500:],
        "stdout_tail": res.stdout_tail[-500:],
        "program_chars": len(program),
    })


class _CodeBenchmark(Benchmark):
    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def program(self, item: Item, answer_text: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, item: Item, answer_text: str) -> Score:
        prog = self.program(item, answer_text)
        return _code_score(run_python(prog, self.timeout_s, self.memory_mb), prog)

    async def ascore(self, item: Item, answer_text: str) -> Score:
        prog = self.program(item, answer_text)
        return _code_score(await arun_python(prog, self.timeout_s, self.memory_mb), prog)


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

    def program(self, item: Item, answer_text: str) -> str:
        return humaneval_program(item, answer_text)


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

    def program(self, item: Item, answer_text: str) -> str:
        return mbpp_program(item, answer_text)
