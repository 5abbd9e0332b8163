// The explorer page of otto-serve: plain JavaScript, no libraries, talks only to this server.
// tests/test_explorer.py checks that every element id used here exists in index.html and that
// every request below is a real route; tests/test_browser.py drives the page in Chromium.
"use strict";

// Every request the page makes: [method, path]; "item" takes the aid appended.
const ROUTES = {
  popular: ["GET", "/api/v1/popular"],
  item: ["GET", "/api/v1/recommendations/"],
  session: ["POST", "/api/v1/recommendations"],
  metrics: ["GET", "/metrics"],
};
const TYPES = ["clicks", "carts", "orders"];
const METRICS_EVERY_MS = 5000;

const state = { selected: null, events: [], sessionSeq: 0 };

function byId(id) {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`the page has no element #${id}`);
  return el;
}

function setStatus(text, ok) {
  const el = byId("status");
  el.textContent = text;
  el.className = ok ? "ok" : "";
}

function k() {
  const v = Number(byId("k-input").value);
  return Number.isInteger(v) && v >= 1 && v <= 100 ? v : 10;
}

// One request; resolves to the parsed body (JSON or text); rejects with the problem's detail.
// (aids are read as JavaScript numbers: exact below 2^53, which OTTO aids are.)
async function request(name, { suffix = "", query = "", body } = {}) {
  const [method, path] = ROUTES[name];
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path + suffix + (query ? "?" + query : ""), init);
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    throw new Error(`${method} ${path}${suffix}: ${resp.status} ${data && data.detail ? data.detail : ""}`);
  }
  return data;
}

function aidButton(aid) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "aid" + (aid === state.selected ? " selected" : "");
  b.dataset.aid = String(aid);
  b.textContent = String(aid);
  return b;
}

function fillTable(tbody, items) {
  tbody.replaceChildren(...items.map((it, i) => {
    const tr = document.createElement("tr");
    const n = document.createElement("td");
    n.textContent = String(i + 1);
    const a = document.createElement("td");
    a.append(aidButton(it.aid));
    const s = document.createElement("td");
    s.className = "score";
    s.textContent = it.score === null ? "–" : it.score.toFixed(6);
    tr.append(n, a, s);
    return tr;
  }));
}

async function loadPopular() {
  await Promise.all(TYPES.map(async (t) => {
    const list = byId(`popular-${t}`);
    try {
      const aids = await request("popular", { query: `type=${t}&k=${k()}` });
      list.replaceChildren(...aids.map((aid) => {
        const li = document.createElement("li");
        li.append(aidButton(aid));
        return li;
      }));
    } catch (err) {
      list.replaceChildren();
      setStatus(String(err.message), false);
    }
  }));
}

async function showItem(aid) {
  state.selected = aid;
  byId("item-title").textContent = `Neighbours of aid ${aid}`;
  for (const t of TYPES) byId(`add-${t}`).disabled = false;
  document.querySelectorAll("button.aid").forEach((b) => b.classList.toggle("selected", Number(b.dataset.aid) === aid));
  try {
    const data = await request("item", { suffix: String(aid), query: `k=${k()}&scores=true` });
    if (state.selected !== aid) return;   // a later click won
    fillTable(byId("neighbours"), data.items);
    byId("item-hint").textContent = `${data.items.length} nearest aids by cosine similarity`;
    setStatus(`aid ${aid}: ${data.items.length} neighbours`, true);
  } catch (err) {
    byId("neighbours").replaceChildren();
    byId("item-hint").textContent = "no neighbours";
    setStatus(String(err.message), false);
  }
}

function renderSession() {
  byId("session-events").replaceChildren(...state.events.map((ev, i) => {
    const li = document.createElement("li");
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = ev.type;
    const rm = document.createElement("button");
    rm.type = "button";
    rm.className = "remove";
    rm.dataset.index = String(i);
    rm.textContent = "remove";
    li.append(type, aidButton(ev.aid), rm);
    return li;
  }));
  byId("session-clear").disabled = state.events.length === 0;
}

async function updateSession() {
  renderSession();
  const seq = ++state.sessionSeq;
  const info = byId("session-info");
  if (state.events.length === 0) {
    byId("session-recs").replaceChildren();
    info.textContent = "add events to see recommendations";
    return;
  }
  try {
    const data = await request("session", { body: { events: state.events, k: k(), scores: true } });
    if (seq !== state.sessionSeq) return;   // the session changed meanwhile
    fillTable(byId("session-recs"), data.items);
    info.textContent = `${data.used_events} of ${state.events.length} events used` +
      (data.unknown.length ? `; unknown aids: ${data.unknown.join(", ")}` : "");
  } catch (err) {
    if (seq !== state.sessionSeq) return;
    byId("session-recs").replaceChildren();
    info.textContent = String(err.message);
  }
}

// Prometheus text -> the panel's numbers.
function parseMetrics(text) {
  const m = { requests: 0, errors: 0, durSum: 0, durCount: 0 };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    const key = line.slice(0, cut);
    const value = Number(line.slice(cut + 1));
    const name = key.split("{")[0];
    if (name === "otto_http_requests_total") {
      m.requests += value;
      const st = /status="(\d+)"/.exec(key);
      if (st && Number(st[1]) >= 400) m.errors += value;
    } else if (name === "otto_http_request_duration_seconds_sum") {
      m.durSum += value;
    } else if (name === "otto_http_request_duration_seconds_count") {
      m.durCount += value;
    } else if (!key.includes("{")) {
      m[name] = value;
    }
  }
  return m;
}

async function loadMetrics() {
  try {
    const m = parseMetrics(await request("metrics"));
    const show = (el, v) => { el.textContent = v === undefined ? "–" : String(v); };
    show(byId("metric-requests"), m.requests);
    show(byId("metric-errors"), m.errors);
    show(byId("metric-latency"), m.durCount ? (1000 * m.durSum / m.durCount).toFixed(3) : undefined);
    show(byId("metric-connections"), m.otto_open_connections);
    show(byId("metric-uptime"), m.otto_uptime_seconds === undefined ? undefined : Math.floor(m.otto_uptime_seconds));
    show(byId("metric-vocab"), m.otto_model_vocab_size);
    show(byId("metric-dim"), m.otto_model_vector_size);
  } catch (err) {
    setStatus(String(err.message), false);
  }
}

function start() {
  document.body.addEventListener("click", (e) => {
    const b = e.target.closest("button.aid");
    if (b) showItem(Number(b.dataset.aid));
  });
  for (const t of TYPES) {
    byId(`add-${t}`).addEventListener("click", () => {
      if (state.selected === null) return;
      state.events.push({ aid: state.selected, type: t });
      updateSession();
    });
  }
  byId("session-events").addEventListener("click", (e) => {
    const b = e.target.closest("button.remove");
    if (!b) return;
    state.events.splice(Number(b.dataset.index), 1);
    updateSession();
  });
  byId("session-clear").addEventListener("click", () => {
    state.events = [];
    updateSession();
  });
  byId("aid-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = byId("aid-input").value.trim();
    if (/^[0-9]+$/.test(v)) showItem(Number(v));
    else setStatus("an aid is a non-negative integer", false);
  });
  byId("k-input").addEventListener("change", () => {
    loadPopular();
    if (state.selected !== null) showItem(state.selected);
    updateSession();
  });
  byId("metrics-refresh").addEventListener("click", loadMetrics);
  loadPopular();
  updateSession();
  loadMetrics();
  setInterval(loadMetrics, METRICS_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
