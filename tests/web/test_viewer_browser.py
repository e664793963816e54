"""The trace viewer in headless Chromium: /traces, a trace page, kept vs dropped, click to see a response.

Chromium comes from Debian (scripts/install-browser.sh); Playwright drives it without
downloading a browser of its own.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")


def _chromium():
    for cand in (os.environ.get("SMOA_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).is_file():
            return cand
    return None


CHROMIUM = _chromium()
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
if CHROMIUM is None or sync_playwright is None:
    why = "Chromium is not installed" if CHROMIUM is None else "playwright is not installed"
    pytest.skip(f"{why}: run scripts/install-browser.sh", allow_module_level=True)

import httpx  # noqa: E402
import openai  # noqa: E402

from smoa.server import create_app  # noqa: E402
from smoa.server.settings import ServerOptions  # noqa: E402
from smoa.server.testing import ThreadServer  # noqa: E402
from smoa.testing import ScriptedBackend, mixture_responder  # noqa: E402
from smoa.tracestore import TraceStore  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def propose(req):
    return f"Proposal from sample {req.settings.seed}: 12 * 7 = 84, because 10 * 7 = 70 and 2 * 7 = 14."


# smoa's judge holds the stop decision in its verdict (the viewer draws it as the moderator's node)
JUDGE = json.dumps({"reasoning": "Candidates 2 and 3 show the working; one more round helps.", "selected": [2, 3], "stop": False})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    be = ScriptedBackend(responder=mixture_responder(propose=propose, judge=JUDGE,
                                                     moderate='{"reasoning": "they agree; one more round helps", "stop": false}',
                                                     aggregate="12 * 7 = 84."))
    store = TraceStore(tmp_path_factory.mktemp("store") / "traces.sqlite")
    app = create_app(None, ServerOptions(), instances={"local": be}, store=store, warm_up=False)
    with ThreadServer(app) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="moa", messages=[{"role": "user", "content": "Say hi."}], extra_body={"smoa": {"n": 2, "max_rounds": 1}})
        raw = c.chat.completions.with_raw_response.create(
            model="smoa", messages=[{"role": "user", "content": "What is 12 * 7? Show the working."}],
            seed=5, extra_body={"smoa": {"n": 4, "k": 2, "max_rounds": 2}},
        )
        srv.trace_id = raw.headers["x-smoa-trace-id"]
        srv.trace = httpx.get(f"{srv.root}/traces/{srv.trace_id}.json").json()
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_list_and_trace_page(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.root) else None)

    page.goto(f"{server.root}/traces")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    assert rows.first.get_attribute("data-trace-id") == server.trace_id  # newest first
    page.screenshot(path=str(tmp_path / "traces.png"), full_page=True)
    rows.first.locator("td.preview a").click()
    page.wait_for_selector("body[data-ready='1']")
    assert page.url.endswith(f"/traces/{server.trace_id}")

    # two layers of four proposers; the judge kept two in each
    tr = server.trace
    kept = page.locator(".node.proposer[data-state='kept']")
    dropped = page.locator(".node.proposer[data-state='dropped']")
    assert kept.count() == sum(len(L["kept"]) for L in tr["layers"]) == 4
    assert dropped.count() == sum(len(L["dropped"]) for L in tr["layers"]) == 4
    style = """e => { const s = getComputedStyle(e); return [s.borderTopStyle, s.borderTopColor, s.opacity]; }"""
    k_style, d_style = kept.first.evaluate(style), dropped.first.evaluate(style)
    assert k_style[0] == "solid" and d_style[0] == "dashed"
    assert k_style[1] != d_style[1] and float(d_style[2]) < 1.0
    assert "kept" in kept.first.locator(".tag").inner_text() and "dropped" in dropped.first.locator(".tag").inner_text()
    # edges: kept responses drawn solid into the judge, dropped ones dashed
    assert page.locator("svg.edges path.edge.kept").count() >= 4
    assert page.locator("svg.edges path.edge.dropped").count() == 4
    # the judge, the moderator's decision and reason, the aggregator; tokens and latency per node
    assert page.locator(".node.judge").count() == 2
    mod = page.locator(".node.moderator")
    assert mod.count() == 1 and "continue" in mod.inner_text() and "one more round" in mod.inner_text()
    assert page.locator(".node.aggregator").count() == 1
    first = page.locator(".node.proposer").first.locator(".metrics").inner_text()
    assert "tok" in first and " s" in first

    page.screenshot(path=str(tmp_path / "trace.png"), full_page=True)

    # clicking a dropped proposer shows its full prompt and response
    node = dropped.first
    call = next(c for c in tr["calls"] if c["id"] == int(node.get_attribute("data-call-id")))
    assert not page.locator("#detail").is_visible()
    node.click()
    detail = page.locator("#detail")
    assert detail.is_visible()
    assert detail.locator("pre.response").inner_text() == call["response"]
    assert call["messages"][-1]["content"] in detail.inner_text()
    # the judge's node shows its reasoning
    page.locator(".node.judge").first.click()
    assert "Candidates 2 and 3 show the working" in detail.inner_text()
    node.click()
    assert page.locator(".node.selected").get_attribute("id") == node.get_attribute("id")
    page.screenshot(path=str(tmp_path / "trace-detail.png"))
    shots = ["traces.png", "trace.png", "trace-detail.png"]
    assert all((tmp_path / s).stat().st_size > 20_000 for s in shots)
    if os.environ.get("SMOA_SCREENSHOTS"):  # keep copies to look at
        dest = Path(os.environ["SMOA_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for s in shots:
            shutil.copy(tmp_path / s, dest / s)
    assert errors == [] and outside == []


def test_standalone_file_from_cli(server, browser, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "t.json"
    src.write_text(json.dumps(server.trace))
    r = subprocess.run([sys.executable, "-m", "smoa", "trace", "view", str(src)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "t.html"
    assert r.stdout.strip() == str(out) and out.is_file()
    page = browser.new_page()
    requests = []
    page.on("request", lambda q: requests.append(q.url))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator(".node.proposer").count() == 8
    page.locator(".node.aggregator").click()
    assert page.locator("#detail pre.response").inner_text() == "12 * 7 = 84."
    assert requests == [out.as_uri()]  # the file needs nothing else


def _traces_of_every_shape():
    import asyncio

    from smoa import resolve
    from smoa.engine import Engine
    from smoa.types import BackendError

    def run(method, responder, **kw):
        be = ScriptedBackend(responder=responder)
        pipe = resolve(method=method, instances={"local": be}, seed=2, **kw)
        try:
            return asyncio.run(Engine(pipe).run("What is 6 * 7?")).trace.to_dict()
        except BackendError as e:
            return e.trace.to_dict()

    def fail(req):
        raise BackendError("openai:http://x: the endpoint answered 500: boom")

    def mad_answer(req):
        return f"I think it is {42 if req.settings.seed % 2 else 41}. The answer is 42."

    return {
        "single": run("single", mixture_responder()),
        "mad": run("mad", mixture_responder(propose=mad_answer), n=3, max_rounds=2),
        "self-moa": run("self-moa", mixture_responder(propose=propose), n=3),
        "failed": run("moa", fail, n=2, max_rounds=1),
    }


def test_every_method_and_a_failure_draw_without_errors(browser, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from smoa.web import render_trace_page

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        traces = pool.submit(_traces_of_every_shape).result()
    for name, trace in traces.items():
        f = tmp_path / f"{name}.html"
        f.write_text(render_trace_page(trace))
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.goto(f.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        assert errors == [], (name, errors)
        n_calls = len(trace["calls"])
        assert page.locator("svg.timeline rect.bar").count() == n_calls
        page.locator(".node.answer").click()
        assert page.locator("#detail").is_visible()
        if name == "failed":
            assert page.locator(".node.proposer[data-state='failed']").count() == 2
            assert "boom" in page.locator(".node.answer").inner_text()
        if name == "mad":
            assert page.locator(".node.vote").count() == 1 and "42" in page.locator(".node.vote").inner_text()
        page.close()
