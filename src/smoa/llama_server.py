"""llama-cpp-python's OpenAI-compatible server, with the same AMX workaround as the
embedded backend: `python -m smoa.llama_server --model X.gguf --port 8080`."""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    from .backends.local import _patch_amx

    _patch_amx()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
