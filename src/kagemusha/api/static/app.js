// kagemusha web UI: plain JS, no build step. Talks to the agent's API with the token as a Bearer header.
// Live updates: the /live server-sent-event stream read with fetch() (EventSource cannot send headers,
// and the token must not go into a URL), reconnecting after a second when the stream ends.
"use strict";

const TOKEN_KEY = "kagemusha.token";
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const ui = { token: sessionStorage.getItem(TOKEN_KEY) || "", abort: null, last: null, generation: 0 };

function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + ui.token }, opts.headers || {});
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, Object.assign({}, opts, { headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) }));
}

function setConn(state, text) {
  const c = $("#conn");
  c.dataset.state = state;
  c.textContent = text;
}

function showLogin(message) {
  ui.generation++;
  if (ui.abort) ui.abort.abort();
  $("#dashboard").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setConn("idle", "");
  $("#token").focus();
}

async function login(ev) {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  ui.token = token;
  let r;
  try {
    r = await api("/cluster");
  } catch (e) {
    $("#login-error").textContent = "cannot reach the agent: " + e;
    return;
  }
  if (r.status === 401) { $("#login-error").textContent = "wrong token"; return; }
  if (!r.ok) { $("#login-error").textContent = await detail(r); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  start();
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  ui.token = "";
  showLogin("logged out");
}

async function detail(r) {
  try {
    const j = await r.json();
    return typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
  } catch (e) {
    return r.status + " " + r.statusText;
  }
}

function start() {
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#logout").hidden = false;
  stream(++ui.generation);
}

// -- the live stream -----------------------------------------------------------------

async function stream(gen) {
  while (gen === ui.generation) {
    const ctl = new AbortController();
    ui.abort = ctl;
    try {
      setConn("connecting", "connecting…");
      const r = await api("/live", { signal: ctl.signal, headers: { Accept: "text/event-stream" } });
      if (r.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showLogin("the token was refused; log in again"); return; }
      if (!r.ok) throw new Error(await detail(r));
      setConn("live", "live");
      await readEvents(r.body, gen);
    } catch (e) {
      if (gen !== ui.generation) return;
      markLost(String(e && e.message ? e.message : e));
    }
    if (gen !== ui.generation) return;
    markLost("stream ended");
    await new Promise((res) => setTimeout(res, 1000));
  }
}

function markLost(why) {
  setConn("lost", "connection lost, retrying…");
  const b = $("#banner");
  b.hidden = false;
  b.textContent = "Lost the connection to this agent (" + why + "). Retrying; the view below may be out of date." +
    otherNodesHint();
}

function otherNodesHint() {
  if (!ui.last) return "";
  const others = ui.last.status.nodes.filter((n) => n.name !== ui.last.served_by && n.state === "up");
  return others.length ? " Other agents: " + others.map((n) => n.name + " at " + n.address).join(", ") + "." : "";
}

async function readEvents(body, gen) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || gen !== ui.generation) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const payload = JSON.parse(data.join("\n"));
      if (event === "status") renderStatus(payload);
      else if (event === "events") renderEvents(payload);
    }
  }
}

// -- rendering -----------------------------------------------------------------------

function renderStatus(p) {
  ui.last = p;
  const st = p.status;
  $("#cluster-name").textContent = st.cluster;
  $("#served-by").textContent = p.served_by + (p.member ? "" : " (not in the cluster)");
  $("#footer").hidden = false;
  const b = $("#banner");
  if (!p.member) {
    b.hidden = false;
    b.textContent = "This agent (" + p.served_by + ") is not in the cluster right now; what it shows may be out of date." + otherNodesHint();
  } else if (p.stale) {
    b.hidden = false;
    b.textContent = "This agent has not read the cluster store for a while; the view may be out of date.";
  } else {
    b.hidden = true;
  }
  const nodes = $("#nodes");
  nodes.replaceChildren(...st.nodes.map((n) => nodeCard(n, p)));
  const groups = $("#groups");
  groups.replaceChildren(...st.groups.map((g) => groupCard(g, p)));
}

function badge(text, cls) {
  return el("span", { class: "badge " + (cls || text) }, text);
}

function nodeCard(n, p) {
  const actions = n.standby
    ? button("Unstandby", "unstandby", { node: n.name }, () => act("Let node " + n.name + " take groups again?",
        "/nodes/" + enc(n.name) + "/unstandby", {}, "unstandby of " + n.name))
    : button("Standby", "standby", { node: n.name }, () => act("Put node " + n.name + " in standby? Its groups move away.",
        "/nodes/" + enc(n.name) + "/standby", {}, "standby of " + n.name));
  return el("div", { class: "card node " + n.state, "data-node": n.name, "data-state": n.state, "data-standby": n.standby ? "yes" : "no" },
    el("div", { class: "title" }, el("strong", {}, n.name), " ", badge(n.state), n.standby ? badge("standby", "standby") : null,
      n.name === p.served_by ? el("span", { class: "here" }, "this agent") : null),
    el("div", { class: "sub" }, n.address),
    el("div", { class: "actions" }, actions));
}

function groupCard(g, p) {
  const nodes = (p.group_nodes[g.name] || []);
  const up = new Set(p.status.nodes.filter((n) => n.state === "up" && !n.standby).map((n) => n.name));
  const moves = nodes.filter((n) => n !== g.node).map((n) =>
    button("Move to " + n, "move", { group: g.name, to: n, disabled: !up.has(n) || !g.node },
      () => act("Move group " + g.name + " to " + n + "?", "/groups/" + enc(g.name) + "/move", { to: n }, "move of " + g.name + " to " + n)));
  const start = button("Start", "start", { group: g.name, disabled: g.state === "online" },
    () => act("Start group " + g.name + "?", "/groups/" + enc(g.name) + "/start", {}, "start of " + g.name));
  const stop = button("Stop", "stop", { group: g.name, disabled: g.state === "offline" && !g.node },
    () => act("Stop group " + g.name + "? It stays offline until started.", "/groups/" + enc(g.name) + "/stop", {}, "stop of " + g.name));
  const res = el("ul", { class: "items" }, g.resources.map((r) =>
    el("li", { "data-resource": r.name, "data-state": r.state }, badge(r.state, health(r.state)), el("strong", {}, r.name), el("span", { class: "sub" }, r.type))));
  const mons = el("ul", { class: "items" }, g.monitors.map((m) => monitorItem(g, m)));
  return el("div", { class: "card group " + g.state, "data-group": g.name, "data-state": g.state, "data-node": g.node || "" },
    el("div", { class: "title" }, el("strong", {}, g.name), " ", badge(g.state), " ",
      el("span", { class: "where" }, g.node ? "on " + g.node : "not running"),
      el("span", { class: "sub" }, " home " + g.home + ", failback " + g.failback)),
    g.reason ? el("div", { class: "reason" }, g.reason) : null,
    el("div", { class: "cols" },
      el("div", {}, el("h3", {}, "Resources"), res),
      el("div", {}, el("h3", {}, "Monitors"), g.monitors.length ? mons : el("p", { class: "sub" }, "none"))),
    el("div", { class: "actions" }, moves, start, stop));
}

function monitorItem(g, m) {
  const state = m.suspended ? "suspended" : (m.last || "pending");
  const btn = m.suspended
    ? button("Resume", "resume", { group: g.name, monitor: m.name }, () => act("Resume monitor " + m.name + " of " + g.name + "?",
        "/groups/" + enc(g.name) + "/monitors/" + enc(m.name) + "/resume", undefined, "resume of monitor " + m.name))
    : button("Suspend", "suspend", { group: g.name, monitor: m.name }, () => act("Suspend monitor " + m.name + " of " + g.name + "? It stops checking until resumed.",
        "/groups/" + enc(g.name) + "/monitors/" + enc(m.name) + "/suspend", undefined, "suspend of monitor " + m.name));
  return el("li", { "data-monitor": m.name, "data-state": state },
    badge(state, health(state)), el("strong", {}, m.name), el("span", { class: "sub" }, m.type),
    m.fail_count ? el("span", { class: "fails" }, m.fail_count + " failed in a row") : null,
    m.failures ? el("span", { class: "sub" }, "(" + m.failures + " failures in all)") : null,
    m.detail ? el("div", { class: "sub detail" }, m.detail) : null,
    btn);
}

function health(state) {
  if (["online", "running", "started", "ok", "up"].includes(state)) return "good";
  if (["failed", "down", "start_failed", "stop_failed"].includes(state)) return "bad";
  if (["starting", "stopping", "suspended"].includes(state)) return "warn";
  return "neutral";
}

function button(text, action, data, onclick) {
  const attrs = { type: "button", class: "act " + action, "data-action": action, onclick };
  for (const [k, v] of Object.entries(data)) {
    if (k === "disabled") attrs.disabled = v;
    else attrs["data-" + k] = v;
  }
  return el("button", attrs, text);
}

const enc = encodeURIComponent;

async function act(question, path, body, what) {
  if (!window.confirm(question)) return;
  const out = $("#action-result");
  out.hidden = false;
  out.className = "result";
  out.textContent = what + ": requested…";
  try {
    const r = await api(path, { method: "POST", body });
    if (r.status === 401) { showLogin("the token was refused; log in again"); return; }
    if (!r.ok) { out.className = "result bad"; out.textContent = what + " failed: " + await detail(r); return; }
    out.textContent = what + ": requested; the view updates as the cluster carries it out.";
    const shown = out.textContent;
    setTimeout(() => { if (out.textContent === shown) out.hidden = true; }, 15000);
  } catch (e) {
    out.className = "result bad";
    out.textContent = what + " failed: " + e;
  }
}

function renderEvents(events) {
  const rows = events.slice().reverse().map((e) =>
    el("tr", { "data-kind": e.kind },
      el("td", { class: "nowrap" }, new Date((e.at || 0) * 1000).toLocaleString()),
      el("td", {}, e.node || ""), el("td", {}, e.group || ""),
      el("td", {}, badge(e.kind || "", kindClass(e.kind))), el("td", {}, e.reason || ""), el("td", { class: "sub" }, e.by || "")));
  $("#events tbody").replaceChildren(...rows);
}

function kindClass(kind) {
  if (["failover", "failover_from", "node_fenced", "restart"].includes(kind)) return "warn";
  if (["online", "start", "node_up"].includes(kind)) return "good";
  return "neutral";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  if (ui.token) start(); else showLogin("");
});
