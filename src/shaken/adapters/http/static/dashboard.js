// The operator's dashboard: each panel is drawn from its JSON endpoint (/dashboard/api/...).
//
// Everything shown may come from an attacker (display names, TNs, x5u URLs, Call-IDs): it is
// only ever set as text (textContent, option text, uPlot labels drawn on a canvas), never as
// markup, and the server's Content-Security-Policy forbids inline script and eval anyway.
"use strict";

(function () {
  const API = "/dashboard/api/";
  const COLORS = {
    verified_A: "#1a7f37", verified_B: "#4c9a2a", verified_C: "#9a6700",
    verified_unknown: "#6e7781", failed: "#cf222e", missing: "#8250df", not_checked: "#57606a",
    A: "#1a7f37", B: "#4c9a2a", C: "#9a6700", unknown: "#6e7781",
  };
  const charts = {};
  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function share(value) {
    return value === null || value === undefined ? "-" : (100 * value).toFixed(1) + "%";
  }

  function isoTime(seconds) {
    return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
  }

  function localInput(seconds) {
    const d = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  // The window and profile every panel is asked for.
  function windowParams() {
    const params = new URLSearchParams();
    const range = $("range").value;
    if (range === "custom") {
      const since = Date.parse($("since").value);
      const until = Date.parse($("until").value);
      if (!isNaN(since)) params.set("since", String(since / 1000));
      if (!isNaN(until)) params.set("until", String(until / 1000));
    } else {
      params.set("range", range);
    }
    if ($("profile").value) params.set("profile", $("profile").value);
    return params;
  }

  async function get(panel, params) {
    const response = await fetch(API + panel + "?" + params.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(panel + ": " + (body.error || response.status));
    return body;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      if (cell instanceof Node) {
        const td = document.createElement("td");
        td.appendChild(cell);
        tr.appendChild(td);
      } else if (typeof cell === "number") {
        tr.appendChild(el("td", cell, "num"));
      } else {
        tr.appendChild(el("td", cell));
      }
    }
    return tr;
  }

  // Every bucket of the window, the empty ones as zeros (the server sends only the others).
  function buckets(document_) {
    const step = document_.window.step;
    const first = Math.floor(document_.window.since / step) * step;
    const times = [];
    for (let t = first; t < document_.window.until; t += step) times.push(t);
    const at = new Map(document_.times.map((t, i) => [t, i]));
    const series = {};
    for (const [name, values] of Object.entries(document_.series)) {
      series[name] = times.map((t) => (at.has(t) ? values[at.get(t)] : 0));
    }
    return { times, series };
  }

  // One time series chart: x the bucket starts over the whole window, a line per series.
  function chart(name, target, document_) {
    const full = buckets(document_);
    const names = Object.keys(full.series);
    const data = [full.times, ...names.map((n) => full.series[n])];
    if (charts[name]) {
      charts[name].destroy();
      delete charts[name];
    }
    target.replaceChildren();
    if (typeof uPlot === "undefined") return;
    const opts = {
      width: Math.max(320, target.clientWidth || 800),
      height: 220,
      series: [{}, ...names.map((n) => ({
        label: n, stroke: COLORS[n] || "#0969da", width: 2, points: { show: false },
      }))],
      axes: [{}, { label: "calls per " + document_.window.step / 60 + " min" }],
      scales: {
        x: { time: true, range: () => [document_.window.since, document_.window.until] },
        y: { range: (u, min, max) => [0, Math.max(1, max)] },
      },
      legend: { show: true },
    };
    charts[name] = new uPlot(opts, data, target);
  }

  function drawTraffic(doc) {
    chart("traffic", $("traffic-chart"), doc);
    const rows = Object.entries(doc.series).map(([name, values]) => {
      const tr = row([name, values.reduce((a, b) => a + b, 0)]);
      tr.dataset.series = name;
      return tr;
    });
    fill($("traffic-totals").tBodies[0], rows);
  }

  function drawAttestation(doc) {
    $("signed-share").textContent = share(doc.signed_share);
    $("inbound-calls").textContent = String(doc.calls);
    $("inbound-signed").textContent = String(doc.signed);
    $("inbound-rejected").textContent = String(doc.rejected);
    const most = Math.max(1, ...Object.values(doc.attestation));
    const rows = Object.entries(doc.attestation).map(([level, count]) => {
      const bar = el("span", null, "bar");
      bar.style.width = Math.round((120 * count) / most) + "px";
      const tr = row([level, count, doc.verified[level] || 0, bar]);
      tr.dataset.level = level;
      return tr;
    });
    fill($("attestation-table").tBodies[0], rows);
  }

  function drawFailures(doc) {
    fill($("failures-table").tBodies[0], doc.reasons.map((r) => {
      const tr = row([r.reason, r.calls, r.rejected, r.sip_code === null ? "-" : String(r.sip_code),
        r.explanation]);
      tr.dataset.reason = r.reason;
      return tr;
    }));
  }

  // A link to the calls a row stands for: fills the search form and runs it.
  function callsLink(text, filters) {
    const a = el("a", text);
    a.href = "#calls?" + new URLSearchParams(filters).toString();
    a.addEventListener("click", (event) => {
      event.preventDefault();
      for (const id of ["tn", "call-id", "origid", "source", "spc"]) $("search-" + id).value = "";
      $("search-outcome").value = "";
      for (const [name, value] of Object.entries(filters)) {
        $("search-" + name.replace("_", "-")).value = value;
      }
      search();
    });
    return a;
  }

  function upstreamRow(label, filters, r) {
    const mix = r.attestation;
    const tr = row([filters ? callsLink(label, filters) : label, r.calls, share(r.signed_share),
      share(r.failure_rate), r.rejected, mix.A + " / " + mix.B + " / " + mix.C]);
    return tr;
  }

  function drawUpstreams(bySource, bySigner) {
    fill($("upstreams-source").tBodies[0], bySource.upstreams.map((r) => {
      const tr = upstreamRow(r.source || "(unknown)", r.source ? { source: r.source } : null, r);
      tr.dataset.source = r.source || "";
      return tr;
    }));
    fill($("upstreams-signer").tBodies[0], bySigner.upstreams.map((r) => {
      const unsigned = r.spc === null && r.x5u_host === null;
      const label = unsigned ? "(unsigned)" : (r.spc || "?") + " @ " + (r.x5u_host || "?");
      const tr = upstreamRow(label, r.spc ? { spc: r.spc } : null, r);
      tr.dataset.spc = r.spc || "";
      return tr;
    }));
  }

  function drawSigning(doc) {
    $("signed-total").textContent = String(doc.signed);
    chart("signing", $("signing-chart"), doc);
    fill($("not-signed-table").tBodies[0],
      doc.not_signed.map((r) => row([r.action, r.reason || "", r.calls])));
  }

  function drawCertificates(doc) {
    fill($("signing-certificates").tBodies[0], doc.signing.map((c) => {
      const state = c.revoked ? "REVOKED" : c.expired ? "EXPIRED" : c.valid ? "valid" : "not valid";
      const days = c.days_left === null ? "-" : c.days_left.toFixed(1);
      return row([c.x5u, c.spc || "-", days, state, c.detail]);
    }));
    const cache = doc.cache;
    $("cache-entries").textContent = String(cache.entries);
    $("cache-hit-rate").textContent = share(cache.hit_rate);
    $("cache-fetches").textContent = String(cache.fetches);
    fill($("fetch-failures").tBodies[0], cache.fetch_failures.map((f) => row([f.host, f.calls])));
    const crl = doc.crl;
    $("crl-mode").textContent = crl.mode;
    $("crl-count").textContent = String(crl.crls);
    $("crl-age").textContent = crl.age_seconds === null ? "never"
      : Math.round(crl.age_seconds) + " s ago" + (crl.stale.length ? " (stale)" : "");
  }

  function showRecord(record) {
    const dl = $("call-record");
    const items = [];
    for (const [key, value] of Object.entries(record)) {
      items.push(el("dt", key));
      items.push(el("dd", value === null ? "" : value));
    }
    dl.replaceChildren(...items);
  }

  function decision(record) {
    if (record.allowed) return el("span", "allowed");
    const code = record.sip_code === null ? "" : " " + record.sip_code;
    return el("span", "NOT ALLOWED" + code, "not-allowed");
  }

  async function search() {
    const params = $("search-in-range").checked ? windowParams() : new URLSearchParams();
    if (!$("search-in-range").checked && $("profile").value) params.set("profile", $("profile").value);
    for (const input of $("search").querySelectorAll("input[name], select[name]")) {
      if (input.value) params.set(input.name, input.value);
    }
    try {
      const doc = await get("calls", params);
      const rows = doc.calls.map((record) => {
        const tr = row([isoTime(record.time), record.direction, record.call_id || "",
          record.orig || "", record.dest || "", record.attest || "", record.outcome,
          decision(record)]);
        tr.dataset.callId = record.call_id || "";
        tr.addEventListener("click", () => {
          for (const other of tr.parentNode.children) other.classList.remove("selected");
          tr.classList.add("selected");
          showRecord(record);
        });
        return tr;
      });
      fill($("search-results").tBodies[0], rows);
      $("call-record").replaceChildren();
      if (doc.calls.length === 1) rows[0].click();
      status("", false);
    } catch (error) {
      status(error.message, true);
    }
  }

  function status(text, bad) {
    const node = $("status");
    node.textContent = text;
    node.className = bad ? "error" : "";
  }

  async function refresh() {
    const params = windowParams();
    document.body.dataset.loading = "true";
    status("loading...", false);
    try {
      const signer = new URLSearchParams(params);
      signer.set("by", "signer");
      const [traffic, attestation, failures, bySource, bySigner, signing, certificates] =
        await Promise.all([
          get("traffic", params), get("attestation", params), get("failures", params),
          get("upstreams", params), get("upstreams", signer), get("signing", params),
          get("certificates", params),
        ]);
      drawTraffic(traffic);
      drawAttestation(attestation);
      drawFailures(failures);
      drawUpstreams(bySource, bySigner);
      drawSigning(signing);
      drawCertificates(certificates);
      status("as of " + isoTime(traffic.window.until), false);
    } catch (error) {
      status(error.message, true);
    } finally {
      document.body.dataset.loading = "false";
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    }
  }

  async function profiles() {
    try {
      const doc = await get("profiles", new URLSearchParams());
      const select = $("profile");
      for (const name of doc.profiles) {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name;
        select.appendChild(option);
      }
    } catch (error) {
      status(error.message, true);
    }
  }

  function start() {
    const now = Date.now() / 1000;
    $("since").value = localInput(now - 3600);
    $("until").value = localInput(now);
    $("range").addEventListener("change", () => {
      document.body.classList.toggle("custom-range", $("range").value === "custom");
      if ($("range").value !== "custom") refresh();
    });
    $("profile").addEventListener("change", refresh);
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
    $("search").addEventListener("submit", (event) => { event.preventDefault(); search(); });
    profiles().then(refresh);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
