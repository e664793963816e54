"""The program that runs inside the sandbox around the candidate code (never imported by smoa).

:mod:`smoa.eval.sandbox` passes this file's text to ``python -I -B -c``. It knows no secret.
File descriptors it inherits (their numbers are its three arguments; they are no secret):

* payload fd: the payload, JSON ``{"code": str, "tests": str | null}``, read to its end and closed
  before any candidate code runs;
* nonce fd: the read end of a pipe holding a per-run random nonce. The runner reads it only after
  the last statement of the tests has returned;
* result fd: the write end of the result pipe. The runner copies the nonce there, flushes output and
  ends with ``os._exit(0)`` at once (no atexit hooks, no finalizers, no other thread left).

A run counts as passed only when the harness finds its nonce on the result fd. Exit statuses, output and
everything else the candidate can produce without the nonce count for nothing. The nonce is
not in this process until the tests have finished: it is not in argv, the environment, a file,
or any object that the candidate could find through ``gc`` or frames while it runs.

Between the candidate code and the tests the runner undoes the usual tampering: builtins come
from a snapshot taken before the candidate ran, every module loaded before the candidate ran
gets its original attributes back, the import system's finder and path lists their original
contents, and trace/profile hooks are cleared. After the tests, a
run with a trace or profile hook set, or with any thread but the main one still alive, fails.

Limit (stated in docs/sandbox.md): code in the same interpreter can do whatever this runner can.
Code written against this runner (read the nonce fd, write the result fd, exit) forges a pass; no design in one
process can prevent that. The nonce stops every generic trick: exits of any kind, exit hooks,
excepthooks, threads, signals, printed markers, patched builtins and modules.
"""

import json
import os
import signal
import sys
import traceback

# Modules that tests commonly import, loaded before the candidate runs so that their original
# attributes are in the snapshot (a candidate that patches math.isclose gets it restored).
# Only cheap ones: each costs every run (statistics, decimal, typing, hashlib add ~50 ms).
PRELOAD = ("bisect", "collections", "copy", "functools", "heapq", "itertools", "math",
           "operator", "random", "re", "string")


def _main() -> None:
    import builtins

    for name in PRELOAD:
        __import__(name)
    read, write, close, exit_ = os.read, os.write, os.close, os._exit
    listdir, gettrace, getprofile = os.listdir, sys.gettrace, sys.getprofile
    settrace, setprofile, sigmask = sys.settrace, sys.setprofile, signal.pthread_sigmask
    all_signals, block = signal.valid_signals(), signal.SIG_BLOCK
    print_exc = traceback.print_exc
    out, err = sys.stdout, sys.stderr
    # Everything used after the code has run is bound here, as locals of this frame: the code
    # can rebind builtins (exec, compile, vars, len...) and this module's globals, not these.
    exec_, compile_, dict_, vars_, len_ = exec, compile, dict, vars, len
    modules, importer_cache = sys.modules, sys.path_importer_cache
    # the import system's lists: a reply can change their contents, not only their binding
    import_lists = tuple((lst, tuple(lst)) for lst in (sys.meta_path, sys.path_hooks, sys.path))
    pristine_builtins = tuple(vars(builtins).items())
    pristine_modules = tuple(
        (name, mod, tuple(vars(mod).items()))
        for name, mod in tuple(sys.modules.items())
        if mod is not None and hasattr(mod, "__dict__")
    )
    missing = object()
    payload_fd, nonce_fd, result_fd = (int(a) for a in sys.argv[1:4])

    def flush() -> None:
        for f in (out, err):
            try:
                f.flush()
            except BaseException:  # noqa: S110 - a closed stream is the candidate's business
                pass

    def fail(why: str, with_traceback: bool = True) -> None:
        sigmask(block, all_signals)
        if with_traceback:
            try:
                print_exc(file=err)
            except BaseException:  # noqa: S110 - tracebacks are best effort
                pass
        try:
            err.write("\nsmoa-sandbox: " + why + "\n")
        except BaseException:  # noqa: S110
            pass
        flush()
        exit_(1)

    def restore() -> None:
        for name, mod, items in pristine_modules:
            modules[name] = mod
            d = vars_(mod)
            for k, v in items:
                if d.get(k, missing) is not v:
                    d[k] = v
        for lst, items in import_lists:  # e.g. a finder that serves a fake module
            lst[:] = items
        importer_cache.clear()

    chunks = []
    while True:
        b = read(payload_fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    close(payload_fd)
    payload = json.loads(b"".join(chunks))
    code, tests = payload["code"], payload.get("tests")
    with open("solution.py", "w", encoding="utf-8") as f:
        f.write(code)
    if tests is not None:
        with open("tests.py", "w", encoding="utf-8") as f:
            f.write(tests)
    del chunks, payload, b, f

    g = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
    sys.argv = ["solution.py"]
    try:
        exec(compile(code, "solution.py", "exec"), g)
    except BaseException as e:  # SystemExit included: exiting is not finishing
        fail(f"the code raised {type(e).__name__}" + (" before the tests ran" if tests else ""))
    if tests is not None:
        try:
            restore()
            settrace(None)
            setprofile(None)
            gt = dict_(g)
            gt["__builtins__"] = dict_(pristine_builtins)
            gt["__file__"] = "tests.py"
            exec_(compile_(tests, "tests.py", "exec"), gt)
        except BaseException as e:
            fail(f"the tests did not finish: {type(e).__name__}")
    try:
        sigmask(block, all_signals)  # no signal handler runs from here on
        if gettrace() is not None or getprofile() is not None:
            fail("a trace or profile hook was left set", with_traceback=False)
        if len_(listdir("/proc/self/task")) != 1:
            fail("threads were still running when the tests ended", with_traceback=False)
    except BaseException as e:
        fail(f"the end checks failed: {type(e).__name__}")
    flush()
    try:
        nonce = read(nonce_fd, 256)
        write(result_fd, nonce)
    except BaseException:
        exit_(1)
    exit_(0)


_main()
