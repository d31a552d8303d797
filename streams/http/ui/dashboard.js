// The deliverytrack dashboard: plain JavaScript, no dependencies, charts in SVG.
// Data comes from this worker's API with the token kept in sessionStorage (this tab only).
"use strict";

(function () {
  const TOKEN_KEY = "deliverytrack.apiToken";
  const REFRESH_MS = 3000;
  const DUE_LIMIT = 500;
  const SAMPLES = 60;
  const SVG = "http://www.w3.org/2000/svg";
  const samples = []; // {t, events, lag}
  let timer = null;
  let refreshes = 0;

  const $ = (id) => document.getElementById(id);

  class AuthNeeded extends Error {}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) {
      askToken(t ? "the worker refused this token" : "");
      throw new AuthNeeded();
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    return { status: response.status, body };
  }

  function askToken(message) {
    if (message) sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
    $("forget-token").hidden = true;
  }

  // --- small DOM helpers (text only: nothing from the API is parsed as HTML) ---------------

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fillTable(id, rows) {
    const body = $(id).tBodies[0];
    body.replaceChildren(
      ...rows.map((cells) => {
        const tr = document.createElement("tr");
        for (const cell of cells) {
          const numeric = typeof cell === "number";
          tr.appendChild(el("td", cell === null || cell === undefined ? "" : cell, numeric ? "num" : "wrap"));
        }
        return tr;
      })
    );
  }

  function pct(part, total) {
    return total ? (part / total * 100).toFixed(1) + " %" : "–";
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // --- charts -------------------------------------------------------------------------------

  function statusChart(byStatus) {
    const entries = Object.entries(byStatus).sort((a, b) => b[1] - a[1]);
    const width = 480, row = 22, labelW = 110, countW = 60;
    const height = Math.max(row, entries.length * row);
    const max = Math.max(1, ...entries.map((e) => e[1]));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "records by status" });
    entries.forEach(([status, count], i) => {
      const y = i * row;
      const w = Math.max(1, (width - labelW - countW) * count / max);
      chart.appendChild(svg("text", { x: 0, y: y + 15 }, status));
      chart.appendChild(svg("rect", { class: "bar", x: labelW, y: y + 4, width: w, height: row - 8 }));
      chart.appendChild(svg("text", { x: labelW + w + 4, y: y + 15 }, count));
    });
    if (!entries.length) chart.appendChild(svg("text", { x: 0, y: 15 }, "no records yet"));
    $("status-chart").replaceChildren(chart);
  }

  function rateChart() {
    const width = 480, height = 140, pad = 24;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "fold rate and lag" });
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].t - samples[i - 1].t) / 1000;
      rates.push(dt > 0 ? Math.max(0, samples[i].events - samples[i - 1].events) / dt : 0);
    }
    const lags = samples.slice(1).map((s) => s.lag);
    const maxRate = Math.max(1, ...rates);
    const maxLag = Math.max(1, ...lags);
    const step = (width - 2 * pad) / Math.max(1, SAMPLES - 1);
    chart.appendChild(svg("line", { class: "axis", x1: pad, y1: height - pad, x2: width - pad, y2: height - pad }));
    lags.forEach((lag, i) => {
      const h = (height - 2 * pad) * lag / maxLag;
      chart.appendChild(svg("rect", { class: "lagbar", x: pad + i * step - step / 3, y: height - pad - h, width: Math.max(1, step * 2 / 3), height: h }));
    });
    if (rates.length > 1) {
      const points = rates.map((r, i) => `${pad + i * step},${height - pad - (height - 2 * pad) * r / maxRate}`);
      chart.appendChild(svg("polyline", { class: "line", points: points.join(" ") }));
    }
    chart.appendChild(svg("text", { x: pad, y: 14 }, `max ${maxRate.toFixed(1)} events/s · max lag ${maxLag}`));
    $("rate-chart").replaceChildren(chart);
  }

  // --- the panels ---------------------------------------------------------------------------

  function showHealth(health) {
    const pill = $("worker-status");
    pill.textContent = health.status || "unknown";
    pill.className = "pill " + (health.status === "ok" ? "ok" : "bad");
  }

  function showStats(stats) {
    $("total-messages").textContent = String(stats.totalMessages);
    $("delivery-rate").textContent = stats.deliveryRate.toFixed(1) + " %";
    $("failure-rate").textContent = stats.failureRate.toFixed(1) + " %";
    statusChart(stats.byStatus);
    const rows = Object.entries(stats.byStatus).sort((a, b) => b[1] - a[1]);
    fillTable("status-table", rows);
    $("status-table").tBodies[0].querySelectorAll("tr").forEach((tr, i) => {
      tr.dataset.status = rows[i][0];
    });
  }

  function showGroups(countBy) {
    const groups = { providerId: new Map(), type: new Map() };
    for (const row of countBy.rows) {
      for (const dim of ["providerId", "type"]) {
        const name = row.key[dim];
        const g = groups[dim].get(name) || { total: 0, delivered: 0, failed: 0 };
        g.total += row.count;
        if (row.key.status === "DELIVERED" || row.key.status === "CLICKED") g.delivered += row.count;
        if (row.key.status === "FAILED") g.failed += row.count;
        groups[dim].set(name, g);
      }
    }
    const table = (map) => [...map.entries()]
      .sort((a, b) => b[1].total - a[1].total)
      .map(([name, g]) => [name, g.total, g.delivered, g.failed, pct(g.delivered, g.total), pct(g.failed, g.total)]);
    fillTable("provider-table", table(groups.providerId));
    fillTable("type-table", table(groups.type));
  }

  function showRates(health, recent) {
    const now = performance.now();
    samples.push({ t: now, events: health.events || 0, lag: recent.lag.total });
    while (samples.length > SAMPLES + 1) samples.shift();
    if (samples.length > 1) {
      const a = samples[samples.length - 2], b = samples[samples.length - 1];
      const dt = (b.t - a.t) / 1000;
      $("fold-rate").textContent = dt > 0 ? (Math.max(0, b.events - a.events) / dt).toFixed(1) : "–";
    }
    $("lag").textContent = String(recent.lag.total);
    rateChart();
  }

  function showRecent(recent, health) {
    $("dead-letter-count").textContent = String(health.deadLetters ?? recent.deadLetters.length);
    fillTable("changes-table", recent.statusChanges.map((c) => [c.at, c.messageId, c.previousStatus, c.status, c.providerId, c.type, c.source]));
    fillTable("letters-table", recent.deadLetters.map((d) => [d.failedAt, d.topic, `${d.partition}/${d.offset}`, d.key, d.reason, d.error]));
  }

  function showDue(due) {
    const n = due.records.length;
    $("due-depth").textContent = n >= DUE_LIMIT ? `${DUE_LIMIT}+` : String(n);
  }

  function showError(message) {
    const p = $("error");
    p.hidden = !message;
    p.textContent = message || "";
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const health = await api("/health");
      if (!token() && health.body && health.body.events === undefined) {
        askToken("");  // a token is configured: /health without one says its status only
        showHealth(health.body);
        return;
      }
      const [stats, countBy, due, recent] = await Promise.all([
        api("/stats"),
        api("/records/count-by?groupBy=providerId,type,status"),
        api(`/records/due?limit=${DUE_LIMIT}`),
        api("/recent"),
      ]);
      showHealth(health.body);
      const failed = [stats, countBy, due, recent].find((r) => r.status !== 200);
      if (failed) {
        showError((failed.body && failed.body.error) || `the worker answered ${failed.status}`);
      } else {
        showError("");
        showStats(stats.body);
        showGroups(countBy.body);
        showDue(due.body);
        showRecent(recent.body, health.body);
        showRates(health.body, recent.body);
      }
      $("forget-token").hidden = !token();
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e instanceof AuthNeeded) return;  // waits for the token form
      showError("cannot reach the worker: " + e.message);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  // --- search -------------------------------------------------------------------------------

  async function search(messageId) {
    const out = $("search-result");
    out.replaceChildren(el("p", "looking up " + messageId + " …", "muted"));
    try {
      const id = encodeURIComponent(messageId);
      const [record, history] = await Promise.all([api(`/records/${id}`), api(`/records/${id}/history`)]);
      if (record.status !== 200 || history.status !== 200) {
        out.replaceChildren(el("p", (record.body && record.body.error) || `the worker answered ${record.status}`, "error"));
        return;
      }
      const r = record.body;
      const dl = el("dl", null, "record");
      dl.id = "record";
      for (const field of ["messageId", "status", "providerId", "type", "providerMessageId", "requestedAt", "sentAt", "deliveredAt", "failedAt", "statusUpdatedAt", "lastError"]) {
        if (r[field] === undefined || r[field] === null) continue;
        dl.appendChild(el("dt", field));
        const dd = el("dd", typeof r[field] === "object" ? JSON.stringify(r[field]) : r[field]);
        dd.dataset.field = field;
        dl.appendChild(dd);
      }
      const table = el("table");
      table.id = "history-table";
      const head = el("thead");
      const hr = el("tr");
      for (const h of ["#", "At", "Status", "Source", "Details"]) hr.appendChild(el("th", h));
      head.appendChild(hr);
      table.appendChild(head);
      const body = el("tbody");
      history.body.history.forEach((entry, i) => {
        const tr = el("tr");
        const { status, source } = entry;
        const at = entry.at || entry.changedAt || entry.timestamp;
        const rest = Object.fromEntries(Object.entries(entry).filter(([k]) => !["status", "source", "at", "changedAt", "timestamp"].includes(k)));
        for (const cell of [i + 1, at, status, source, Object.keys(rest).length ? JSON.stringify(rest) : ""]) tr.appendChild(el("td", cell, "wrap"));
        body.appendChild(tr);
      });
      table.appendChild(body);
      out.replaceChildren(dl, el("h3", "History"), table);
    } catch (e) {
      if (!(e instanceof AuthNeeded)) out.replaceChildren(el("p", "cannot reach the worker: " + e.message, "error"));
    }
  }

  // --- wiring -------------------------------------------------------------------------------

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    askToken("");
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("search-input").value.trim();
    if (id) search(id);
  });
  refresh();
})();
