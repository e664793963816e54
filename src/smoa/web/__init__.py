"""The trace viewer: self-contained HTML pages (CSS and JS inlined, nothing fetched from outside).

    render_trace_page(trace_dict)   one query as a graph; the same page `smoa trace view` writes
    render_list_page(rows, ...)     recent queries, as the server shows them at /traces
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from importlib import resources
from typing import Any
from urllib.parse import quote


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no '<' can close the tag."""
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _page(title: str, body: str, script: str = "") -> str:
    parts = {"title": html.escape(title), "css": _asset("viewer.css"), "body": body, "script": script}
    # one pass, so that text inside the trace can never be taken for a placeholder
    return re.sub(r"\{\{(title|css|body|script)\}\}", lambda m: parts[m.group(1)], _asset("page.html"))


def render_trace_page(trace: dict[str, Any], json_url: str | None = None, back_url: str | None = None) -> str:
    """One trace drawn as layers left to right; click a node for its full prompt and response."""
    q = trace.get("query") or []
    last = next((m.get("content", "") for m in reversed(q) if m.get("role") == "user"), "")
    title = f"smoa trace · {trace.get('method', '')} · {' '.join(last.split())[:60]}"
    links = []
    if back_url:
        links.append(f'<a href="{html.escape(back_url)}">← all traces</a>')
    if json_url:
        links.append(f'<a href="{html.escape(json_url)}">trace JSON</a>')
    body = (
        f'<nav class="top">{" · ".join(links)}<span class="brand">smoa trace viewer</span></nav>'
        '<main id="app"><noscript>This page draws the trace with JavaScript; the raw trace is in the page source.</noscript></main>'
        f'<script id="trace-data" type="application/json">{_json_for_script(trace)}</script>'
    )
    return _page(title, body, f"<script>{_asset('viewer.js')}</script>")


def _fmt_time(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def render_list_page(rows: list[dict[str, Any]], total: int | None = None, limit: int = 50, offset: int = 0, store: str = "") -> str:
    """Recent queries: time, method, tokens, latency, previews; each row links to its trace."""
    e = html.escape
    out = []
    for r in rows:
        status = f'<span class="pill bad" title="{e(r["error"])}">failed</span>' if r.get("error") else '<span class="pill ok">ok</span>'
        href = f'/traces/{quote(r["id"])}'
        out.append(
            f'<tr data-trace-id="{e(r["id"])}">'
            f'<td class="nowrap"><a href="{href}">{e(_fmt_time(r["created_at"]))}</a><div class="sub">{e(r.get("source") or "")}</div></td>'
            f'<td><span class="method m-{e(r["method"])}">{e(r["method"])}</span>'
            f'<div class="sub">{e(r["pipeline"]) if r["pipeline"] != r["method"] else ""}</div></td>'
            f'<td class="preview"><a href="{href}">{e(r["query"]) or "<em>(empty)</em>"}</a></td>'
            f'<td class="preview answer">{e(r["answer"])}</td>'
            f'<td class="num">{r["total_tokens"]:,}<div class="sub">{r["prompt_tokens"]:,} in · {r["completion_tokens"]:,} out</div></td>'
            f'<td class="num">{r["calls"]}</td>'
            f'<td class="num">{r["wall_s"]:.2f} s</td>'
            f"<td>{status}</td></tr>"
        )
    if not out:
        table = '<p class="empty">No traces yet. Ask something (<code>smoa ask "..."</code>) or send a chat completion to this server.</p>'
    else:
        table = (
            '<table class="list"><thead><tr><th>time</th><th>method</th><th>query</th><th>answer</th>'
            '<th class="num">tokens</th><th class="num">calls</th><th class="num">latency</th><th></th></tr></thead>'
            f'<tbody>{"".join(out)}</tbody></table>'
        )
    pager = []
    if offset > 0:
        pager.append(f'<a href="/traces?limit={limit}&offset={max(0, offset - limit)}">← newer</a>')
    if total is not None and offset + limit < total:
        pager.append(f'<a href="/traces?limit={limit}&offset={offset + limit}">older →</a>')
    count = f"{total:,} traces" if total is not None else ""
    body = (
        '<nav class="top"><span class="brand">smoa trace viewer</span></nav>'
        f'<main class="listpage"><h1>Recent queries</h1><p class="sub">{e(count)}{" · store: " + e(store) if store else ""}</p>'
        f'{table}<p class="pager">{" · ".join(pager)}</p></main>'
    )
    return _page("smoa traces", body)


def render_message_page(title: str, message: str) -> str:
    body = f'<nav class="top"><a href="/traces">← all traces</a><span class="brand">smoa trace viewer</span></nav><main class="listpage"><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></main>'
    return _page(title, body)


__all__ = ["render_list_page", "render_message_page", "render_trace_page"]
