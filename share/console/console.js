// routemq console: a client of /status, /stats, /errors, /dlq and the actions
// (POST /reload, /scale, /dlq/replay, /dlq/delete). Everything it shows from the server goes in with
// textContent or as SVG numbers, never as HTML: a topic or an error text is
// shown as the text it is.
"use strict";
(function () {
  var TOKEN_KEY = "routemq-token";
  var $ = function (id) { return document.getElementById(id); };
  var token = sessionStorage.getItem(TOKEN_KEY) || "";
  var prev = null;        // the last /status, for rates per worker
  var restartsSeen = {};  // slot -> restarts, to flash a row that restarted
  var timers = [];
  var running = false;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function duration(s) {
    s = Math.floor(s || 0);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }

  function num(x, digits) {
    if (x === undefined || x === null || isNaN(x)) return "-";
    if (x >= 1000) return Math.round(x).toLocaleString("en");
    return (Math.round(x * Math.pow(10, digits || 0)) / Math.pow(10, digits || 0)).toString();
  }

  function ms(x) {
    if (!x) return "-";
    if (x < 1) return num(x * 1000, 0) + " µs";
    if (x < 1000) return num(x, x < 10 ? 2 : 1) + " ms";
    return num(x / 1000, 2) + " s";
  }

  // fetch with the token; a 401 shows the token form and nothing else.
  function api(path, opts) {
    opts = opts || {};
    var headers = opts.headers || {};
    if (token) headers.Authorization = "Bearer " + token;
    opts.headers = headers;
    opts.credentials = "omit";
    opts.cache = "no-store";
    return fetch(path, opts).then(function (r) {
      if (r.status === 401) { locked(token ? "That token was refused." : ""); throw new Error("unauthorized"); }
      $("conn").hidden = true;
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    }, function (e) { $("conn").hidden = false; throw e; });
  }

  function locked(msg) {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    $("app").hidden = true;
    $("actions").hidden = true;
    $("gate").hidden = false;
    $("gate-msg").textContent = msg || "";
    clear($("instance"));
    $("state").textContent = "";
    $("gate-token").focus();
  }

  function unlocked() {
    $("gate").hidden = true;
    $("app").hidden = false;
    $("actions").hidden = false;
    start();
  }

  // ---- status: overview and workers ----
  function renderStatus(s) {
    var now = Date.now();
    $("instance").textContent = (s.instance ? s.instance + " · " : "") + s.app;
    var st = $("state");
    st.textContent = s.state + (s.ready ? ", ready" : ", not ready");
    st.className = "badge " + (s.ready ? "ok" : "warn");
    st.title = s.ready_reason || "";
    $("scale-n").textContent = s.workers;
    $("o-gen").textContent = s.generation;
    $("o-up").textContent = duration(s.uptime_seconds);
    $("o-restarts").textContent = num(s.totals.restarts);
    var ready = 0, connected = 0;
    s.slots.forEach(function (w) { if (w.state === "ready") ready++; if (w.connected) connected++; });
    $("o-ready").textContent = ready + " / " + s.workers;

    var ov = $("overview");
    clear(ov);
    [["version", s.version], ["master pid", s.pid],
      ["broker", s.broker + " (" + connected + " of " + s.slots.length + " workers connected)"], ["application", s.app],
      ["ready", s.ready ? "yes" : "no: " + s.ready_reason],
      ["totals", num(s.totals.messages) + " messages, " + num(s.totals.errors) + (s.totals.errors === 1 ? " error, " : " errors, ") +
        num(s.totals.unmatched) + " unmatched, " + num(s.totals.dead_lettered) + " dead-lettered"],
      ["reloads", s.reloads.ok + " ok, " + s.reloads.failed + " failed" +
        (s.app_changed_on_disk ? " (app/ changed on disk since generation " + s.generation + ")" : "")]
    ].forEach(function (kv) { ov.appendChild(el("dt", kv[0])); ov.appendChild(el("dd", kv[1])); });

    var dt = prev ? (now - prev.at) / 1000 : 0;
    var before = {};
    if (prev) prev.status.slots.forEach(function (w) { before[w.slot] = w; });
    var body = $("workers").tBodies[0];
    clear(body);
    s.slots.forEach(function (w) {
      var tr = el("tr");
      tr.dataset.slot = w.slot;
      if (w.pid <= 0) tr.className = "down";
      var b = before[w.slot];
      var rate = b && dt > 0 ? Math.max(0, (w.messages - b.messages) / dt) : null;
      var cells = [
        [w.slot], [w.state, "state state-" + w.state], [w.pid > 0 ? w.pid : "-"], [w.generation],
        [rate === null ? "-" : num(rate, rate < 10 ? 1 : 0), "n rate"], [w.in_progress, "n"], [w.kept, "n"],
        [w.outgoing, "n"], [w.rss_kb ? num(w.rss_kb / 1024, 1) + " MB" : "-", "n"], [w.restarts, "n restarts"],
        [w.last_restart ? w.last_restart.text + " (" + duration(w.last_restart.seconds_ago) + " ago)" : "-", "reason"]
      ];
      cells.forEach(function (c) { tr.appendChild(el("td", c[0], c[1])); });
      if (restartsSeen[w.slot] !== undefined && w.restarts > restartsSeen[w.slot]) tr.classList.add("flash");
      restartsSeen[w.slot] = w.restarts;
      body.appendChild(tr);
    });
    if (prev && dt > 0) {
      var r = (s.totals.messages - prev.status.totals.messages) / dt;
      var e = (s.totals.errors - prev.status.totals.errors) / dt;
      $("o-rate").textContent = num(Math.max(0, r), r < 10 ? 1 : 0);
      $("o-erate").textContent = num(Math.max(0, e), e < 10 ? 1 : 0);
    }
    prev = { at: now, status: s };
  }

  function renderGroup(g) {
    $("group-name").textContent = g.group + (g.connected ? "" : " (presence not connected)");
    var body = $("group").tBodies[0];
    clear(body);
    (g.instances || []).forEach(function (i) {
      var tr = el("tr");
      var since = i.since ? new Date(i.since * 1000).toISOString().replace(".000", "") : "-";
      [i.instance, i.host, i.state, i.workers, since].forEach(function (v) {
        tr.appendChild(el("td", v === undefined || v === null ? "-" : v));
      });
      body.appendChild(tr);
    });
    if (!body.rows.length) {
      var tr = el("tr");
      var td = el("td", "no presence records", "muted");
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  // ---- stats: route charts ----
  var SVGNS = "http://www.w3.org/2000/svg";
  function spark(values, cls, label) {
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "spark" + (cls ? " " + cls : ""));
    svg.setAttribute("viewBox", "0 0 300 40");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    var max = 0;
    values.forEach(function (v) { if (v > max) max = v; });
    var n = values.length, pts = [];
    for (var i = 0; i < n; i++) {
      var x = n > 1 ? (300 - (n - 1 - i) * (300 / Math.max(n - 1, 1))) : 300;
      var y = max > 0 ? 38 - (values[i] / max) * 36 : 38;
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    }
    var line = document.createElementNS(SVGNS, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(line);
    var title = document.createElementNS(SVGNS, "title");
    title.textContent = label + ": max " + num(max, 2);
    svg.appendChild(title);
    return svg;
  }

  function renderStats(st) {
    $("window").textContent = st.seconds >= 60 ? Math.round(st.seconds / 60) + " min" : st.seconds + " s";
    var body = $("routes").tBodies[0];
    clear(body);
    st.routes.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.route, "route"));
      tr.appendChild(el("td", num(r.rate, 2), "n"));
      tr.appendChild(el("td", num(r.error_rate, 2), "n" + (r.errors ? " error" : "")));
      tr.appendChild(el("td", ms(r.p50_ms), "n"));
      tr.appendChild(el("td", ms(r.p99_ms), "n"));
      var c1 = el("td"), c2 = el("td");
      if (r.series) {
        c1.appendChild(spark(r.series.messages, "", "messages per second"));
        c2.appendChild(spark(r.series.p99_ms, "err", "p99 ms"));
      }
      tr.appendChild(c1);
      tr.appendChild(c2);
      body.appendChild(tr);
    });
    $("routes-note").textContent = st.routes.length ? st.routes_active + " route" + (st.routes_active === 1 ? "" : "s") +
      " with traffic of " + st.routes_known + " known" + (st.routes_active > st.routes.length ? ", the busiest " +
      st.routes.length + " shown" : "") + "; charts for the busiest " + Math.min(20, st.routes.length) +
      ". p50: mean of the seconds' medians; p99: the highest second." : "no traffic in the window";
  }

  // ---- errors ----
  function renderErrors(e) {
    $("errors-count").textContent = e.total ? "(" + e.total + " since start, latest " + e.errors.length + ")" : "(none)";
    var list = $("errors");
    clear(list);
    e.errors.forEach(function (x) {
      var li = el("li");
      var head = el("div", null, "head");
      head.appendChild(el("span", x.time, "muted mono"));
      head.appendChild(el("span", "route " + x.route, "mono"));
      head.appendChild(el("span", "topic " + x.topic, "mono topic"));
      head.appendChild(el("span", "worker " + x.slot + " (pid " + x.pid + ")", "muted"));
      li.appendChild(head);
      li.appendChild(el("div", x.message, "msg mono"));
      if (x.traceback) {
        var d = el("details");
        d.appendChild(el("summary", "traceback"));
        d.appendChild(el("pre", x.traceback));
        li.appendChild(d);
      }
      list.appendChild(li);
    });
  }

  // ---- dead letters ----
  function renderDlq(d) {
    $("dlq-count").textContent = d.total ? "(" + d.total + " in the store" +
      (d.total > d.count ? ", the newest " + d.count + " shown" : "") + ")" : "(none)";
    $("dlq-replay-all").disabled = $("dlq-delete-all").disabled = !d.total;
    var body = $("dlq").tBodies[0];
    clear(body);
    d.records.forEach(function (x) {
      var tr = el("tr");
      tr.dataset.id = x.id;
      [[x.id, "n"], [x.time.replace("T", " ").replace(/\.\d+Z$/, ""), "mono muted"], [x.route, "mono"],
        [x.topic, "mono topic"], [x.reason + (x.state === "stored" ? "" : " (" + x.state.replace("_", " ") + ")")],
        [x.attempts, "n"], [(x.error || "").split("\n")[0], "mono msg"]
      ].forEach(function (c) { tr.appendChild(el("td", c[0], c[1])); });
      var td = el("td", null, "buttons");
      var show = el("button", "Show");
      show.type = "button";
      show.addEventListener("click", function () { showDlq(x.id); });
      var replay = el("button", "Replay");
      replay.type = "button";
      replay.addEventListener("click", function () {
        confirmThen("Replay dead letter " + x.id + " (topic " + x.topic + ")?", function () {
          dlqAction("/dlq/replay", { ids: [x.id] });
        });
      });
      var del = el("button", "Delete");
      del.type = "button";
      del.addEventListener("click", function () {
        confirmThen("Delete dead letter " + x.id + " (topic " + x.topic + ")? It cannot be replayed afterwards.",
          function () { dlqAction("/dlq/delete", { ids: [x.id] }); });
      });
      td.appendChild(show);
      td.appendChild(replay);
      td.appendChild(del);
      tr.appendChild(td);
      body.appendChild(tr);
    });
  }

  function refreshDlq() {
    return api("/dlq?limit=50").then(function (r) { if (r.status === 200) renderDlq(r.body); }, function () {});
  }

  function showDlq(id) {
    api("/dlq/" + encodeURIComponent(id)).then(function (r) {
      if (r.status !== 200) { showResult(r); return; }
      var x = r.body;
      $("dlq-detail").hidden = false;
      $("dlq-detail-id").textContent = x.id;
      var kv = $("dlq-detail-kv");
      clear(kv);
      var p = x.properties || {};
      var rows = [["time", x.time], ["route", x.route], ["topic", x.topic], ["qos", x.qos], ["retain", x.retain ? "yes" : "no"],
        ["reason", x.reason], ["attempts", x.attempts], ["replays", x.replays], ["state", x.state], ["error", x.error || "-"]];
      if (p.content_type) rows.push(["content type", p.content_type]);
      if (p.response_topic) rows.push(["response topic", p.response_topic]);
      if (p.correlation_data !== undefined) rows.push(["correlation data", p.correlation_data +
        (p.correlation_data_encoding === "base64" ? " (base64)" : "")]);
      (p.user_properties || []).forEach(function (u) { rows.push(["user property", u[0] + " = " + u[1]]); });
      rows.push(["payload", x.payload_size + " bytes" + (x.payload_encoding === "base64" ? ", binary: base64 below" : "")]);
      rows.forEach(function (kvp) { kv.appendChild(el("dt", kvp[0])); kv.appendChild(el("dd", kvp[1])); });
      $("dlq-detail-payload").textContent = x.payload;
      var tb = $("dlq-detail-tb");
      tb.hidden = !x.traceback;
      tb.querySelector("pre").textContent = x.traceback || "";
    }, function () {});
  }

  function dlqAction(path, body) {
    return action(path, body).then(refreshDlq);
  }

  $("dlq-detail-close").addEventListener("click", function () { $("dlq-detail").hidden = true; });
  $("dlq-replay-all").addEventListener("click", function () {
    confirmThen("Replay every dead letter? The workers handle them again as new messages.", function () {
      dlqAction("/dlq/replay", { all: true });
    });
  });
  $("dlq-delete-all").addEventListener("click", function () {
    confirmThen("Delete every dead letter? They cannot be replayed afterwards.", function () {
      dlqAction("/dlq/delete", { all: true });
    });
  });

  // ---- polling ----
  function every(ms, fn) {
    fn();
    timers.push(setInterval(fn, ms));
  }

  function start() {
    if (running) return;
    running = true;
    every(1000, function () { api("/status").then(function (r) { renderStatus(r.body); }, function () {}); });
    every(2000, function () { api("/stats?window=300&routes=20&limit=50").then(function (r) { renderStats(r.body); }, function () {}); });
    every(2000, function () { api("/errors").then(function (r) { renderErrors(r.body); }, function () {}); });
    every(5000, function () { api("/status?cluster=1").then(function (r) { renderGroup(r.body); }, function () {}); });
    every(5000, refreshDlq);
  }

  function stop() {
    running = false;
    timers.forEach(clearInterval);
    timers = [];
  }

  // A hidden tab asks nothing of the master.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) stop();
    else if (!$("app").hidden) start();
  });

  // ---- actions: confirmed, then their result shown ----
  function confirmThen(text, fn) {
    var d = $("confirm");
    $("confirm-text").textContent = text;
    var ok = $("confirm-ok"), cancel = $("confirm-cancel");
    function done(yes) {
      ok.onclick = cancel.onclick = null;
      d.close();
      if (yes) fn();
    }
    ok.onclick = function () { done(true); };
    cancel.onclick = function () { done(false); };
    d.showModal();
  }

  function showResult(r) {
    var p = $("result");
    p.hidden = false;
    var good = r.status >= 200 && r.status < 300;
    p.className = "result " + (good ? "ok" : "bad");
    p.textContent = (good ? "" : "Failed (" + r.status + "): ") + (r.body.message || r.body.error || JSON.stringify(r.body));
  }

  function action(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) })
      .then(showResult, function (e) {
        if (e.message !== "unauthorized") showResult({ status: 0, body: { error: String(e.message || e) } });
      });
  }

  $("reload").addEventListener("click", function () {
    confirmThen("Reload the application? Workers are replaced one by one.", function () { action("/reload"); });
  });
  $("scale-up").addEventListener("click", function () {
    confirmThen("Start one more worker?", function () { action("/scale", { step: "up" }); });
  });
  $("scale-down").addEventListener("click", function () {
    confirmThen("Stop one worker?", function () { action("/scale", { step: "down" }); });
  });

  $("gate-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var t = $("gate-token").value.trim();
    if (!t) return;
    token = t;
    $("gate-token").value = "";
    sessionStorage.setItem(TOKEN_KEY, t);
    $("gate-msg").textContent = "";
    api("/status").then(function (r) { renderStatus(r.body); unlocked(); }, function () {});
  });

  // First look: does /status answer without (or with the kept) token?
  api("/status").then(function (r) { renderStatus(r.body); unlocked(); }, function (e) {
    if (e.message !== "unauthorized") { $("conn").hidden = false; setTimeout(function () { location.reload(); }, 3000); }
  });
})();
