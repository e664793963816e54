"""Every README block marked `<!-- readme-test -->` runs here, as a user would run it."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-test(?::\s*(\w+))? -->\s*\n```(\w+)\n(.*?)```", re.S)


def blocks():
    out = []
    for i, m in enumerate(BLOCK.finditer(README.read_text(encoding="utf-8"))):
        kind, lang, body = m.group(1), m.group(2), m.group(3)
        out.append(pytest.param(kind, lang, body, id=f"{i}-{lang}"))
    return out


def test_readme_has_examples():
    assert len(blocks()) >= 4


@pytest.mark.embedded
@pytest.mark.parametrize("kind,lang,body", blocks())
def test_readme_example(kind, lang, body, tmp_path, monkeypatch):
    if lang == "console":
        for line in body.splitlines():
            if not line.startswith("$ "):
                continue
            argv = shlex.split(line[2:])
            assert argv[0] == "smoa"
            r = subprocess.run([sys.executable, "-m", "smoa", *argv[1:]], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip()
    elif lang == "python":
        r = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        if "-> " in body:
            expected = body.split("-> ")[-1].strip()
            assert r.stdout.strip().splitlines()[-1] == expected
    elif lang == "toml" and kind == "config":
        from smoa.config import load_config, resolve

        p = tmp_path / "smoa.toml"
        p.write_text(body)
        monkeypatch.setenv("TOGETHER_API_KEY", "test-key-not-used")
        cfg = load_config(p)
        for name in cfg.pipelines:
            pipe = resolve(cfg, pipeline=name)
            assert pipe.n == cfg.pipelines[name].n
    else:
        pytest.fail(f"no runner for a {lang} block")
