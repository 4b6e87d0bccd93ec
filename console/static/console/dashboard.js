// The staff dashboard's live updates (templates/console/dashboard.html).
// Each settled request arrives over the WebSocket as a "usage.settled" event: its tenant's
// row moves at once by the request's tokens and cost, the request joins "Last requests",
// and a snapshot of every tenant (data.json: the live counters, projections included) is
// re-read shortly after, so the page never drifts from what admission sees.
(function () {
  "use strict";

  // As console.selectors.usd_text (usage.admin.usd): exactly to the nano-dollar, trailing
  // zeros dropped but at least cents ("$0.0000002", "$1.50", "$1,234.567"). Integer
  // arithmetic on the nanos: a float's toFixed would round a tiny cost to $0.000000.
  function usd(nanos) {
    var n = Math.round(Number(nanos));
    var sign = n < 0 ? "-" : "";
    n = Math.abs(n);
    var whole = Math.floor(n / 1e9);
    var fraction = String(n % 1e9).padStart(9, "0").replace(/0+$/, "");
    while (fraction.length < 2) fraction += "0";
    return sign + "$" + whole.toLocaleString("en-US") + "." + fraction;
  }

  // For tests run under Node (tests/test_dashboard.py); browsers have no ``module``.
  if (typeof module !== "undefined" && module.exports) {
    module.exports = {usd: usd};
  }

  var root = typeof document === "undefined" ? null : document.getElementById("console-dashboard");
  if (!root) {
    return;
  }
  var statusEl = document.getElementById("live-status");
  var list = document.getElementById("last-requests");
  var nearPercent = Number(root.dataset.nearPercent || 80);
  var MAX_RECENT = 20;
  var snapshotTimer = null;

  function count(n) {
    return Number(n).toLocaleString("en-US");
  }

  function percent(used, cap) {
    if (cap === "" || cap === undefined) return null;
    cap = Number(cap);
    if (cap <= 0) return used <= 0 ? 100 : Infinity;
    return (100 * used) / cap;
  }

  function percentText(p) {
    if (p === null) return "";
    return p === Infinity ? "over" : Math.round(p) + "%";
  }

  function field(row, name) {
    return row.querySelector('[data-field="' + name + '"]');
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function setLevel(row, level) {
    row.dataset.level = level;
    row.className = "level-" + level;
  }

  function rowFor(tenantId) {
    return document.querySelector('#tenant-weeks tr[data-tenant-id="' + tenantId + '"]');
  }

  // The request's own figures, added at once (the snapshot follows with the exact ones).
  function moveRow(row, tokens, costNanos) {
    var used = Number(row.dataset.tokens) + tokens;
    var cost = Number(row.dataset.costNanos) + costNanos;
    row.dataset.tokens = String(used);
    row.dataset.costNanos = String(cost);
    setText(field(row, "tokens"), count(used));
    setText(field(row, "cost"), usd(cost));
    var tp = percent(used, row.dataset.tokenCap);
    var cp = percent(cost, row.dataset.costCapNanos);
    setText(field(row, "token-percent"), percentText(tp));
    setText(field(row, "cost-percent"), percentText(cp));
    var shares = [tp, cp].filter(function (p) { return p !== null; });
    var top = shares.length ? Math.max.apply(null, shares) : null;
    setLevel(row, top === null || top < nearPercent ? "ok" : top >= 100 ? "over" : "near");
  }

  function moveTotals(tokens, costNanos) {
    var t = document.getElementById("week-tokens");
    var c = document.getElementById("week-cost");
    if (t) {
      t.dataset.tokens = String(Number(t.dataset.tokens) + tokens);
      setText(t, count(t.dataset.tokens));
    }
    if (c) {
      c.dataset.costNanos = String(Number(c.dataset.costNanos) + costNanos);
      setText(c, usd(Number(c.dataset.costNanos)));
    }
  }

  function applySnapshot(snap) {
    snap.tenants.forEach(function (t) {
      var row = rowFor(t.id);
      if (!row) return; // a tenant created since the page loaded: shown on the next load
      row.dataset.tokens = String(t.tokens);
      row.dataset.costNanos = String(t.cost_nanos);
      setText(field(row, "tokens"), count(t.tokens));
      setText(field(row, "cost"), t.cost_text);
      setText(field(row, "token-percent"), t.token_percent_text);
      setText(field(row, "cost-percent"), t.cost_percent_text);
      setText(field(row, "projected-tokens"), count(t.projected_tokens));
      setText(field(row, "projected-cost"), t.projected_cost_text);
      setText(field(row, "reaches-cap-at"), t.reaches_cap_text);
      setLevel(row, t.level);
    });
    var total = document.getElementById("week-tokens");
    var cost = document.getElementById("week-cost");
    if (total) {
      total.dataset.tokens = String(snap.tokens);
      setText(total, count(snap.tokens));
    }
    if (cost) {
      cost.dataset.costNanos = String(snap.cost_nanos);
      setText(cost, snap.cost_text);
    }
    root.dataset.snapshotAt = snap.now;
  }

  function refreshSoon() {
    clearTimeout(snapshotTimer);
    snapshotTimer = setTimeout(function () {
      fetch(root.dataset.snapshotUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(applySnapshot)
        .catch(function () { /* the next event tries again */ });
    }, 300);
  }

  function addRequest(m, slug) {
    if (!list) return;
    var empty = list.querySelector("[data-empty]");
    if (empty) empty.remove();
    var li = document.createElement("li");
    li.dataset.requestId = m.request_id;
    li.dataset.tenantId = String(m.tenant_id);
    li.dataset.status = m.status;
    li.className = "console-new";
    var when = document.createElement("time");
    when.dateTime = m.created_at;
    when.textContent = new Date(m.created_at).toLocaleTimeString("en-GB");
    var who = document.createElement("strong");
    who.textContent = slug;
    var status = document.createElement("span");
    status.className = "status-" + m.status;
    status.textContent = m.status + (m.error_code ? " " + m.error_code : "");
    li.append(when, " ", who, " " + m.model + " · ", status,
      " · " + count(m.tokens) + " tokens · " + usd(m.cost_nanos) + " · " + m.latency_ms + " ms" +
      (m.ttft_ms === null || m.ttft_ms === undefined ? "" : " (first token " + m.ttft_ms + " ms)"));
    list.prepend(li);
    while (list.children.length > MAX_RECENT) list.lastElementChild.remove();
  }

  function onSettled(m) {
    var row = rowFor(m.tenant_id);
    // Not settled: it was billed as lost before, and the counters did not move again.
    if (m.settled) {
      if (row) moveRow(row, m.tokens, m.cost_nanos);
      moveTotals(m.tokens, m.cost_nanos);
    }
    addRequest(m, row ? row.dataset.tenant : "tenant #" + m.tenant_id);
    root.dataset.messages = String(Number(root.dataset.messages || 0) + 1);
    refreshSoon();
  }

  function setState(state, text) {
    if (!statusEl) return;
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function connect(delay) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () {
      delay = 1000;
      setState("live", "live");
      refreshSoon(); // whatever settled while the socket was down
    };
    socket.onmessage = function (event) {
      var m;
      try {
        m = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (m.type === "usage.settled") onSettled(m);
    };
    socket.onclose = function () {
      setState("closed", "disconnected: retrying…");
      setTimeout(function () { connect(Math.min(delay * 2, 30000)); }, delay);
    };
  }

  connect(1000);
})();
