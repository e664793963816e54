/* smoa trace viewer: draws one trace (embedded as JSON in #trace-data) as a graph.
   Layers run left to right; each proposer is a node; the judge's kept and dropped
   responses, the moderator's decision and the aggregator follow. Click a node to see
   its full prompt and response. No libraries, nothing fetched. */
(function () {
  "use strict";
  var T = JSON.parse(document.getElementById("trace-data").textContent);
  var calls = {};
  (T.calls || []).forEach(function (c) { calls[c.id] = c; });
  var app = document.getElementById("app");
  var nodesById = {};
  var callToNode = {};
  var edges = [];

  // -- small helpers --------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function secs(s) { s = s || 0; return s < 10 ? s.toFixed(2) + " s" : s.toFixed(1) + " s"; }
  function oneLine(s, n) {
    s = String(s || "").replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  }
  function tokens(c) {
    if (!c) return "";
    var t = num(c.prompt_tokens) + " \u2192 " + num(c.completion_tokens) + " tok \u00b7 " + secs(c.latency_s);
    return c.cached ? t + " \u00b7 cached" : t;
  }
  function plist(idx) {
    if (!idx || !idx.length) return "none";
    return idx.slice().sort(function (a, b) { return a - b; }).map(function (i) { return "P" + (i + 1); }).join(", ");
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // -- header ---------------------------------------------------------------
  function header() {
    var q = T.query || [];
    var lastUser = -1;
    for (var i = q.length - 1; i >= 0; i--) if (q[i].role === "user") { lastUser = i; break; }
    var head = el("header", "trace-head");
    var left = el("div");
    if (lastUser > 0) {
      var d = el("details", "history");
      add(d, el("summary", null, "conversation: " + lastUser + " earlier message" + (lastUser > 1 ? "s" : "")));
      for (var j = 0; j < lastUser; j++) add(d, message(q[j]));
      add(left, d);
    }
    add(left, el("p", "query", lastUser >= 0 ? q[lastUser].content : ""));
    var tot = (T.cost && T.cost.total) || {};
    var chips = el("div", "chips");
    function chip(label, value, title) {
      var c = el("span", "chip");
      add(c, el("b", null, label + " "), document.createTextNode(value));
      if (title) c.title = title;
      add(chips, c);
    }
    chip("method", T.method + (T.pipeline && T.pipeline !== T.method ? " (" + T.pipeline + ")" : ""));
    if (T.created_at) chip("at", new Date(T.created_at * 1000).toLocaleString());
    chip("wall", secs(T.wall_s));
    chip("calls", num(tot.calls));
    chip("tokens", num(tot.total_tokens), num(tot.prompt_tokens) + " prompt + " + num(tot.completion_tokens) + " completion");
    if (T.stop_reason) chip("stopped by", T.stop_reason);
    var cfg = T.config || {};
    if (cfg.n) chip("n / k / rounds", cfg.n + " / " + (cfg.k == null ? "all" : cfg.k) + " / " + cfg.max_rounds);
    if (cfg.roles_source) chip("roles", cfg.roles_source);
    chip("id", T.id.slice(0, 12), T.id);
    add(left, chips);
    add(head, left);
    add(app, head);
    if (T.error) add(app, el("div", "banner", "This query failed: " + T.error));
  }

  function message(m) {
    var box = el("div", "msg");
    add(box, el("div", "msg-role", m.role), add(el("pre"), document.createTextNode(m.content)));
    return box;
  }

  // -- graph model ----------------------------------------------------------
  function node(id, kind, opts) {
    var n = el("div", "node " + kind + (opts.state ? " " + opts.state : ""));
    n.id = "node-" + id;
    n.dataset.node = id;
    n.dataset.kind = kind;
    if (opts.state) n.dataset.state = opts.state;
    if (opts.call != null) { n.dataset.callId = opts.call; callToNode[opts.call] = id; }
    n.tabIndex = 0;
    var head = el("div", "head");
    if (opts.badge) add(head, el("span", "badge", opts.badge));
    add(head, el("span", "title", opts.title));
    if (opts.tag) add(head, el("span", "tag", opts.tag));
    add(n, head);
    if (opts.role) { var r = el("div", "role", opts.role); r.title = opts.role; add(n, r); }
    if (opts.model) add(n, el("div", "model", opts.model));
    var c = opts.call != null ? calls[opts.call] : null;
    if (c) add(n, el("div", "metrics", tokens(c)));
    if (opts.metrics) add(n, el("div", "metrics", opts.metrics));
    if (opts.warn) add(n, el("div", "warn", opts.warn));
    if (opts.preview != null && opts.preview !== "") add(n, el("div", "preview", opts.preview));
    n.addEventListener("click", function () { select(id); });
    n.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(id); } });
    nodesById[id] = { el: n, opts: opts, kind: kind };
    return n;
  }

  function column(title, sub) {
    var col = el("div", "col");
    var t = el("div", "col-title", title);
    if (sub) t.title = sub;
    add(col, t);
    var body = el("div", "col-body");
    add(col, body);
    return { col: col, body: body };
  }

  function buildGraph() {
    var graph = el("div", "graph");
    graph.id = "graph";
    var layers = T.layers || [];
    var fin = T.finish || {};
    var prev = [];  // node ids that feed the next column
    var roleCall = (T.calls || []).filter(function (c) { return c.stage === "role"; })[0];
    var cfg = T.config || {};

    if (roleCall || cfg.roles_source) {
      var rc = column("roles");
      var src = cfg.roles_source || "generated";
      add(rc.body, node("roles", "roles", {
        title: "Role play", tag: src, call: roleCall ? roleCall.id : null,
        model: roleCall ? roleCall.backend + " \u00b7 " + roleCall.model : null,
        metrics: roleCall ? null : (src === "cache" ? "from the role cache: no call" : "given by the user: no call"),
        warn: cfg.roles_fallback ? cfg.roles_fallback + " fallback role(s) added" : (cfg.roles_error ? "generator failed" : null),
        preview: (T.roles || []).filter(Boolean).length + " roles, one per proposer",
      }));
      add(graph, rc.col);
      prev = ["roles"];
    }

    layers.forEach(function (L, li) {
      var last = li === layers.length - 1;
      var kept = L.kept || [];
      var dup = (L.judge && L.judge.duplicates) || [];
      var col = column("layer " + L.layer, (L.proposals || []).length + " proposers");
      var ids = [];
      (L.proposals || []).forEach(function (p) {
        var state = !p.ok ? "failed" : (kept.indexOf(p.index) >= 0 ? "kept" : "dropped");
        var c = calls[p.call_id];
        var tag = state === "kept" ? "\u2713 kept" : state === "failed" ? "! failed" : (dup.indexOf(p.index) >= 0 ? "duplicate" : "dropped");
        var id = "p" + L.layer + "-" + p.index;
        add(col.body, node(id, "proposer", {
          badge: "P" + (p.index + 1), title: p.agent, tag: tag, state: state, call: p.call_id,
          role: p.role || "", model: p.backend + " \u00b7 " + p.model,
          preview: state === "failed" ? (p.error || (c && c.error) || "failed") : (c ? oneLine(c.response, 220) : ""),
          layer: L, proposal: p,
        }));
        ids.push(id);
        prev.forEach(function (from) {
          edges.push({ from: from, to: id, cls: from === "roles" ? "light" : "flow" });
        });
      });
      add(graph, col.col);
      prev = ids;

      var hasGate = !!L.judge || !!L.moderator || !last;
      if (!hasGate) return;
      var gc = column(L.judge ? "judge" + (L.moderator ? " \u00b7 moderator" : "") : (T.method === "mad" ? "debate" : "forward"));
      var gateId = "gate" + L.layer;
      if (L.judge) {
        var J = L.judge;
        var notCalled = J.call_id == null;
        add(gc.body, node(gateId, "judge", {
          title: "Judge", tag: "keeps " + kept.length + " of " + (L.proposals || []).length, call: J.call_id,
          model: notCalled ? "not called" : calls[J.call_id].backend + " \u00b7 " + calls[J.call_id].model,
          metrics: "kept " + plist(kept) + " \u00b7 dropped " + plist(L.dropped),
          warn: J.fallback ? "fallback: " + J.fallback : (J.error ? "judge failed" : null),
          preview: notCalled ? (J.reason || "") : (J.reasoning || ""),
          layer: L,
        }));
      } else {
        add(gc.body, node(gateId, "forward", {
          title: T.method === "mad" ? "Debate" : "Forward all",
          tag: kept.length + " \u2192",
          preview: T.method === "mad" ? "each agent sees the others' answers and revises" : "every response goes to the next layer",
          layer: L,
        }));
      }
      (L.proposals || []).forEach(function (p) {
        var state = !p.ok ? "failed" : (kept.indexOf(p.index) >= 0 ? "kept" : "dropped");
        edges.push({ from: "p" + L.layer + "-" + p.index, to: gateId, cls: state });
      });
      if (L.moderator) {
        var M = L.moderator;
        var modId = "mod" + L.layer;
        add(gc.body, node(modId, "moderator", {
          title: M.combined ? "Stop (in the judge's verdict)" : "Moderator", tag: M.stop ? "stop" : "continue", state: M.stop ? "stop" : "go", call: M.call_id,
          model: M.call_id != null && calls[M.call_id] ? calls[M.call_id].backend + " \u00b7 " + calls[M.call_id].model : "not reached",
          warn: M.fallback ? "fallback: " + M.fallback : null,
          preview: M.reasoning || "",
          layer: L,
        }));
        edges.push({ from: gateId, to: modId, cls: "stack" });
      }
      add(graph, gc.col);
      prev = [gateId];
    });

    if (fin.kind === "aggregate" || fin.kind === "vote") {
      var ac = column(fin.kind === "vote" ? "vote" : "aggregator");
      var aggCall = fin.call_id != null ? calls[fin.call_id] : null;
      if (fin.kind === "aggregate") {
        add(ac.body, node("finish", "aggregator", {
          title: "Aggregator", tag: "from " + plist(fin.inputs), call: fin.call_id,
          model: aggCall ? aggCall.backend + " \u00b7 " + aggCall.model : "",
          warn: fin.vote_failed ? "no majority: aggregated instead" : null,
          preview: aggCall ? oneLine(aggCall.response, 200) : "",
        }));
      } else {
        var votes = fin.votes || {};
        add(ac.body, node("finish", "vote", {
          title: "Majority vote", tag: String(fin.answer),
          metrics: Object.keys(votes).map(function (k) { return k + ": " + votes[k]; }).join(" \u00b7 "),
          preview: "the winner's text is the answer",
        }));
        callToNode[fin.call_id] = callToNode[fin.call_id] || "finish";
      }
      prev.forEach(function (from) { edges.push({ from: from, to: "finish", cls: "final" }); });
      add(graph, ac.col);
      prev = ["finish"];
    } else if (T.error && prev.length && (T.calls || []).some(function (c) { return c.stage === "aggregate"; })) {
      var failedAgg = (T.calls || []).filter(function (c) { return c.stage === "aggregate"; }).pop();
      var fc = column("aggregator");
      add(fc.body, node("finish", "aggregator", {
        title: "Aggregator", tag: "! failed", state: "failed", call: failedAgg.id,
        model: failedAgg.backend + " \u00b7 " + failedAgg.model, preview: failedAgg.error || "",
      }));
      prev.forEach(function (from) { edges.push({ from: from, to: "finish", cls: "failed" }); });
      add(graph, fc.col);
      prev = ["finish"];
    }

    var ansCol = column("answer");
    var tot = (T.cost && T.cost.total) || {};
    add(ansCol.body, node("answer", "answer", {
      title: T.error ? "No answer" : "Answer", tag: T.stop_reason ? "stop: " + T.stop_reason : null,
      state: T.error ? "error" : null,
      metrics: num(tot.total_tokens) + " tok in " + num(tot.calls) + " calls \u00b7 " + secs(T.wall_s),
      preview: T.error ? T.error : T.answer,
    }));
    prev.forEach(function (from) {
      var c = nodesById[from] && nodesById[from].opts.state;
      edges.push({ from: from, to: "answer", cls: from === "finish" ? "final" : (c === "failed" ? "failed" : "kept") });
    });
    add(graph, ansCol.col);
    return graph;
  }

  function drawEdges(graph) {
    var old = graph.querySelector("svg.edges");
    if (old) old.remove();
    var box = graph.getBoundingClientRect();
    var svg = svgEl("svg", { "class": "edges", width: graph.scrollWidth, height: graph.scrollHeight });
    var defs = svgEl("defs", {});
    [["kept", "#1a7f37"], ["final", "#0969da"], ["flow", "#8c959f"], ["dropped", "#8c959f"], ["failed", "#cf222e"], ["light", "#1b7c83"]].forEach(function (m) {
      var mk = svgEl("marker", { id: "arrow-" + m[0], viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
      mk.appendChild(svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: m[1] }));
      defs.appendChild(mk);
    });
    svg.appendChild(defs);
    edges.forEach(function (e) {
      var a = nodesById[e.from], b = nodesById[e.to];
      if (!a || !b) return;
      var ra = a.el.getBoundingClientRect(), rb = b.el.getBoundingClientRect();
      if (e.cls === "stack") {
        var x = ra.left + ra.width / 2 - box.left;
        svg.appendChild(svgEl("line", { "class": "stack", x1: x, y1: ra.bottom - box.top, x2: x, y2: rb.top - box.top }));
        return;
      }
      var x1 = ra.right - box.left, y1 = ra.top + ra.height / 2 - box.top;
      var x2 = rb.left - box.left - 2, y2 = rb.top + rb.height / 2 - box.top;
      var dx = Math.max(24, (x2 - x1) / 2);
      var p = svgEl("path", {
        "class": "edge " + e.cls, d: "M" + x1 + "," + y1 + " C" + (x1 + dx) + "," + y1 + " " + (x2 - dx) + "," + y2 + " " + x2 + "," + y2,
        "marker-end": "url(#arrow-" + (e.cls === "kept" || e.cls === "final" || e.cls === "failed" || e.cls === "dropped" || e.cls === "light" ? e.cls : "flow") + ")",
      });
      p.dataset.from = e.from;
      p.dataset.to = e.to;
      svg.appendChild(p);
    });
    graph.insertBefore(svg, graph.firstChild);
  }

  // -- cost table and timeline ---------------------------------------------
  function lower() {
    var sec = el("section", "lower");
    var left = el("div");
    add(left, el("h3", null, "Tokens by stage"));
    var tbl = el("table", "cost");
    var hr = el("tr");
    ["stage", "calls", "prompt", "completion", "total", "call time"].forEach(function (h) { add(hr, el("th", null, h)); });
    add(tbl, add(el("thead"), hr));
    var body = el("tbody");
    var by = (T.cost && T.cost.by_stage) || {};
    Object.keys(by).forEach(function (st) {
      var s = by[st], tr = el("tr");
      [st, num(s.calls) + (s.errors ? " (" + s.errors + " failed)" : ""), num(s.prompt_tokens), num(s.completion_tokens), num(s.total_tokens), secs(s.latency_s)].forEach(function (v) { add(tr, el("td", null, v)); });
      add(body, tr);
    });
    var t = (T.cost && T.cost.total) || {}, trt = el("tr", "total");
    ["total", num(t.calls), num(t.prompt_tokens), num(t.completion_tokens), num(t.total_tokens), secs(T.wall_s) + " wall"].forEach(function (v) { add(trt, el("td", null, v)); });
    add(body, trt);
    add(tbl, body);
    add(left, tbl);
    add(sec, left);

    var right = el("div");
    add(right, el("h3", null, "Timeline (calls over wall time)"));
    var cs = (T.calls || []).slice().sort(function (a, b) { return a.started_at - b.started_at || a.id - b.id; });
    var span = Math.max(T.wall_s || 0, 0.001);
    cs.forEach(function (c) { span = Math.max(span, c.started_at + c.latency_s); });
    var W = 620, labelW = 120, rowH = 16, H = cs.length * rowH + 22;
    var svg = svgEl("svg", { "class": "timeline", width: W, height: H });
    cs.forEach(function (c, i) {
      var y = i * rowH;
      var label = svgEl("text", { x: labelW - 6, y: y + 11, "text-anchor": "end" });
      label.textContent = (c.layer ? "L" + c.layer + " " : "") + c.agent;
      svg.appendChild(label);
      var x = labelW + (c.started_at / span) * (W - labelW - 8);
      var w = Math.max(2, (c.latency_s / span) * (W - labelW - 8));
      var r = svgEl("rect", { "class": "bar st-" + (c.error ? "error" : c.stage), x: x, y: y + 2, width: w, height: rowH - 5, rx: 2 });
      r.dataset.callId = c.id;
      var tip = svgEl("title", {});
      tip.textContent = c.stage + " \u00b7 " + c.agent + " \u00b7 " + tokens(c);
      r.appendChild(tip);
      r.addEventListener("click", function () { var n = callToNode[c.id]; if (n) select(n); else showCall(c, c.stage + " " + c.agent); });
      svg.appendChild(r);
    });
    var axis = svgEl("text", { x: W - 8, y: H - 4, "text-anchor": "end" });
    axis.textContent = secs(span);
    svg.appendChild(axis);
    var zero = svgEl("text", { x: labelW, y: H - 4 });
    zero.textContent = "0 s";
    svg.appendChild(zero);
    add(right, svg);
    add(sec, right);
    add(app, sec);
  }

  // -- detail panel ---------------------------------------------------------
  var panel = el("aside", "detail");
  panel.id = "detail";
  panel.setAttribute("aria-live", "polite");
  var selected = null;

  function facts(pairs) {
    var dl = el("dl", "facts");
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === "") return;
      add(dl, el("dt", null, p[0]), el("dd", null, p[1]));
    });
    return dl;
  }

  function openPanel(title, sub) {
    panel.textContent = "";
    var close = el("button", "close", "close \u00d7");
    close.addEventListener("click", closePanel);
    add(panel, close, el("h2", null, title));
    if (sub) add(panel, el("div", "sub", sub));
    panel.classList.add("open");
  }

  function closePanel() {
    panel.classList.remove("open");
    if (selected && nodesById[selected]) nodesById[selected].el.classList.remove("selected");
    selected = null;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  function showCall(c, title, sub) {
    openPanel(title, sub);
    add(panel, facts([
      ["stage", c.stage + (c.layer ? " (layer " + c.layer + ")" : "")],
      ["agent", c.agent],
      ["backend", c.backend],
      ["model", c.model],
      ["prompt tokens", num(c.prompt_tokens)],
      ["completion tokens", num(c.completion_tokens)],
      ["latency", secs(c.latency_s)],
      ["started", "+" + secs(c.started_at)],
      ["cached", c.cached ? "yes (no tokens spent)" : null],
      ["error", c.error],
    ]));
    if (c.role) { add(panel, el("h3", null, "Role")); add(panel, el("pre", "block", c.role)); }
    add(panel, el("h3", null, "Prompt (" + (c.messages || []).length + " message" + ((c.messages || []).length === 1 ? "" : "s") + ")"));
    (c.messages || []).forEach(function (m) { add(panel, message(m)); });
    add(panel, el("h3", null, "Response"));
    add(panel, el("pre", "response" + (c.error ? " err" : ""), c.error && !c.response ? c.error : c.response));
  }

  function select(id) {
    var n = nodesById[id];
    if (!n) return;
    if (selected && nodesById[selected]) nodesById[selected].el.classList.remove("selected");
    selected = id;
    n.el.classList.add("selected");
    history.replaceState(null, "", "#" + id);
    var o = n.opts, L = o.layer, c = o.call != null ? calls[o.call] : null;
    if (n.kind === "proposer") {
      var st = o.state === "kept" ? "kept by the " + (L.judge ? "judge" : "method") : o.state;
      if (c) showCall(c, "Proposer " + o.badge.slice(1) + " \u00b7 layer " + L.layer, st);
      else openPanel("Proposer " + o.badge.slice(1), st);
    } else if (n.kind === "judge") {
      var J = L.judge;
      if (c) showCall(c, "Judge \u00b7 layer " + L.layer, "keeps the best k for the next step");
      else openPanel("Judge \u00b7 layer " + L.layer, "not called");
      add(panel, el("h3", null, "Decision"));
      add(panel, facts([
        ["kept", plist(L.kept)], ["dropped", plist(L.dropped)], ["failed", L.failed && L.failed.length ? plist(L.failed) : null],
        ["duplicates", J.duplicates && J.duplicates.length ? plist(J.duplicates) : null],
        ["shown order", J.shown_order ? plist(J.shown_order) : null],
        ["fallback", J.fallback || null], ["note", J.reason || null], ["error", J.error || null],
      ]));
      if (J.reasoning) { add(panel, el("h3", null, "Reasoning")); add(panel, el("pre", "block", J.reasoning)); }
    } else if (n.kind === "moderator") {
      var M = L.moderator;
      if (c) showCall(c, "Moderator \u00b7 layer " + L.layer, M.stop ? "decided to stop" : "decided to continue");
      else openPanel("Moderator \u00b7 layer " + L.layer, M.stop ? "stop" : "continue");
      add(panel, el("h3", null, "Decision"));
      add(panel, facts([["stop", M.stop ? "yes: no more layers" : "no: run another layer"], ["fallback", M.fallback || null], ["error", M.error || null]]));
      if (M.reasoning) { add(panel, el("h3", null, "Reasoning")); add(panel, el("pre", "block", M.reasoning)); }
    } else if (n.kind === "forward") {
      openPanel(o.title + " \u00b7 layer " + L.layer, o.preview);
      add(panel, facts([["forwarded", plist(L.kept)], ["failed", L.failed && L.failed.length ? plist(L.failed) : null]]));
    } else if (n.kind === "vote") {
      var F = T.finish;
      openPanel("Majority vote", "answers extracted from the last layer");
      add(panel, facts([["winner", String(F.answer)], ["votes", JSON.stringify(F.votes)], ["chosen call", F.call_id]]));
    } else if (n.kind === "answer") {
      openPanel(T.error ? "No answer" : "Answer", "stop reason: " + (T.stop_reason || "?") + " \u00b7 finish: " + ((T.finish || {}).kind || "?"));
      if (T.error) add(panel, el("div", "banner", T.error));
      add(panel, el("h3", null, "Final answer"));
      add(panel, el("pre", "response", T.answer || ""));
      add(panel, el("h3", null, "Pipeline"));
      add(panel, el("pre", "block", JSON.stringify(T.config, null, 2)));
    } else if (n.kind === "roles") {
      if (c) showCall(c, "Role play", "r_i = LLM(dataset, task)");
      else openPanel("Role play", (T.config || {}).roles_source);
      add(panel, el("h3", null, "Roles"));
      (T.roles || []).forEach(function (r, i) { add(panel, message({ role: "proposer " + (i + 1), content: r })); });
    } else if (c) {
      showCall(c, o.title);
    }
  }

  document.addEventListener("keydown", function (e) { if (e.key === "Escape") closePanel(); });

  // -- assemble -------------------------------------------------------------
  header();
  var legend = el("div", "legend");
  [["l-kept", "kept by the judge / forwarded"], ["l-dropped", "dropped"], ["l-failed", "failed"], ["l-judge", "judge"], ["l-mod", "moderator"], ["l-agg", "aggregator"]].forEach(function (l) { add(legend, el("span", l[0], l[1])); });
  add(app, legend);
  var wrap = el("section", "graph-wrap");
  var graph = buildGraph();
  add(wrap, graph);
  add(app, wrap);
  lower();
  document.body.appendChild(panel);
  function redraw() { drawEdges(graph); }
  redraw();
  window.addEventListener("resize", redraw);
  if (document.fonts && document.fonts.ready) document.fonts.ready.then(redraw);
  var h = location.hash.slice(1);
  if (h && nodesById[h]) select(h);
  window.smoaViewer = { select: select, close: closePanel, trace: T, ready: true };
  document.body.dataset.ready = "1";
})();
