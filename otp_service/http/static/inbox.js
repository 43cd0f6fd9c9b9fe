// otp-service inbox page: live list of captured messages.
//
// Everything from a message is put on the page as text (textContent, attributes set by name),
// never parsed as HTML; an email's HTML is shown only inside a sandboxed frame without scripts.
// The token (when the service has one) lives in sessionStorage and goes in the Authorization
// header, never in a URL, which is why the live stream is read with fetch, not EventSource.
"use strict";

const TOKEN_KEY = "otp-service-token";
const LIST_LIMIT = 200;
const TYPES = ["SignIn", "Register", "ForgotPassword", "Generic", "OrganizationInvitation",
  "UserPermissionValidation", "BindNewIdentifier", "MfaVerification", "BindMfa", "SMTP"];
// The email preview may load nothing and run nothing (the frame's sandbox has no allow-scripts).
const PREVIEW_HEAD = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; ' +
  'style-src \'unsafe-inline\'; img-src data:"><base target="_blank">';

const state = {
  messages: new Map(), // id -> message JSON
  open: new Set(), // ids whose detail is open: they stay open across updates
  tabs: new Map(), // id -> the tab last chosen
  nodes: new Map(), // id -> <li>
  stream: null, // AbortController of the live stream
  loaded: false,
  sinceReady: new Map(), // what the stream brought while the list was being fetched
};

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// -- the API, with the token as a header

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options, headers: headers() });
  if (response.status === 401) throw new Unauthorized();
  return response;
}

// -- token prompt

function askForToken(refused) {
  stopStream();
  $("login").hidden = false;
  $("login-error").hidden = !refused;
  $("filters").hidden = true;
  $("empty").hidden = true;
  $("none-match").hidden = true;
  $("list").hidden = true;
  setLive("offline", "needs a token");
  $("token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("login").hidden = true;
  $("list").hidden = false;
  start(true);
});

// -- live stream (Server-Sent Events over fetch)

function setLive(stateName, label) {
  const live = $("live");
  live.dataset.state = stateName;
  live.textContent = label;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function start(afterLogin) {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  setLive("connecting", "connecting…");
  let response;
  try {
    response = await fetch("/v1/messages/events", {
      headers: headers(), cache: "no-store", signal: controller.signal,
    });
  } catch (error) {
    return retry(controller);
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    return askForToken(afterLogin === true);
  }
  if (!response.ok || !response.body) return retry(controller);
  $("filters").hidden = false;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        await onEvent(block);
      }
    }
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken(false);
  }
  return retry(controller);
}

function retry(controller) {
  if (state.stream !== controller || controller.signal.aborted) return;
  setLive("offline", "reconnecting…");
  setTimeout(() => { if (state.stream === controller) start(false); }, 1500);
}

async function onEvent(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (kind === "ready") {
    state.sinceReady = new Map();
    await loadList(); // subscribed first, so nothing captured meanwhile is missed
    setLive("live", "live");
  } else if (kind === "added") {
    state.sinceReady.set(payload.id, payload);
    state.messages.set(payload.id, payload);
    render([payload.id]);
  } else if (kind === "deleted") {
    state.messages.delete(payload.id);
    render();
  } else if (kind === "cleared") {
    for (const [id, message] of state.messages) {
      if (payload.to === null || message.to.toLowerCase() === payload.to.toLowerCase()) {
        state.messages.delete(id);
      }
    }
    render();
  }
}

async function loadList() {
  const response = await api("/v1/messages?limit=" + LIST_LIMIT);
  if (!response.ok) throw new Error("list failed: " + response.status);
  const body = await response.json();
  const fresh = new Map();
  for (const message of body.messages.reverse()) fresh.set(message.id, message);
  // Keep what arrived over the stream while the list was on its way; forget the rest (after a
  // reconnect the service may have restarted with an empty inbox).
  for (const [id, message] of state.sinceReady) if (!fresh.has(id)) fresh.set(id, message);
  state.messages = fresh;
  state.loaded = true;
  render();
}

// -- filters, delete, clear

function filters() {
  return {
    to: $("f-to").value.trim().toLowerCase().replace(/[\s().-]/g, ""),
    channel: $("f-channel").value,
    type: $("f-type").value,
  };
}

function matches(message, f) {
  if (f.channel && message.channel !== f.channel) return false;
  if (f.type && message.type !== f.type) return false;
  if (f.to && !message.to.toLowerCase().replace(/[\s().-]/g, "").includes(f.to)) return false;
  return true;
}

for (const id of ["f-to", "f-channel", "f-type"]) $(id).addEventListener("input", () => render());
$("filters").addEventListener("submit", (event) => event.preventDefault());

$("clear").addEventListener("click", async () => {
  try {
    await api("/v1/messages", { method: "DELETE" });
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken(false);
    throw error;
  }
  state.messages.clear();
  render();
});

async function remove(id) {
  try {
    await api("/v1/messages/" + encodeURIComponent(id), { method: "DELETE" });
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken(false);
    throw error;
  }
  state.messages.delete(id);
  render();
}

// -- copy

// The Clipboard API first; where it is missing (plain http on another host) or refused (no
// permission), a hidden textarea and execCommand("copy"); where that fails too, the code is
// selected so the user can copy it with the keyboard.
async function copy(text, button, codeNode) {
  let ok = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (error) { ok = false; }
  }
  if (!ok) ok = copyBySelection(text);
  if (!ok) selectContents(codeNode);
  const keys = /Mac|iPhone|iPad/.test(navigator.platform) ? "\u2318C" : "Ctrl+C";
  button.textContent = ok ? "Copied" : `Press ${keys}`;
  button.classList.toggle("done", ok);
  setTimeout(() => { button.textContent = "Copy"; button.classList.remove("done"); },
    ok ? 1500 : 5000);
}

function copyBySelection(text) {
  const area = el("textarea", { readonly: "", "aria-hidden": "true" });
  area.value = text;
  area.style.position = "fixed";
  area.style.top = "0";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (error) { ok = false; }
  area.remove();
  return ok;
}

function selectContents(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// -- rendering

function updateTypes() {
  const select = $("f-type");
  const known = new Set(Array.from(select.options, (o) => o.value));
  const seen = new Set(TYPES);
  for (const message of state.messages.values()) seen.add(message.type);
  for (const type of seen) {
    if (!known.has(type)) select.append(el("option", { value: type, text: type }));
  }
}

function render(freshIds) {
  const list = $("list");
  const f = filters();
  const ordered = Array.from(state.messages.values()).reverse(); // newest first
  const shown = new Set(ordered.filter((m) => matches(m, f)));
  for (const [id, node] of state.nodes) {
    if (!state.messages.has(id)) {
      node.remove();
      state.nodes.delete(id);
      state.open.delete(id);
      state.tabs.delete(id);
    }
  }
  let previous = null;
  for (const message of ordered) {
    let node = state.nodes.get(message.id);
    if (!node) {
      node = card(message);
      state.nodes.set(message.id, node);
      if (freshIds && freshIds.includes(message.id)) node.classList.add("fresh");
    }
    node.hidden = !shown.has(message);
    // Existing nodes are moved only when out of place, so an open preview is left alone.
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== node) list.insertBefore(node, expected);
    previous = node;
  }
  const total = state.messages.size;
  $("count").textContent = total ? "(" + total + ")" : "";
  document.title = (total ? "(" + total + ") " : "") + "Inbox · otp-service";
  $("empty").hidden = !state.loaded || total > 0;
  $("none-match").hidden = total === 0 || shown.size > 0;
  updateTypes();
}

function timeOf(message) {
  const when = new Date(message.created_at);
  return isNaN(when) ? message.created_at : when.toLocaleTimeString();
}

function card(message) {
  const id = message.id;
  const codeBox = el("div", { class: "codebox" });
  if (message.code) {
    const copyButton = el("button", { type: "button", class: "copy", text: "Copy",
      "aria-label": "Copy the code" });
    const code = el("span", { class: "code", text: message.code });
    copyButton.addEventListener("click", (event) => {
      event.stopPropagation();
      copy(message.code, copyButton, code);
    });
    codeBox.append(code, copyButton);
  }
  const deleteButton = el("button", { type: "button", class: "delete", text: "×",
    title: "Delete", "aria-label": "Delete this message" });
  deleteButton.addEventListener("click", (event) => { event.stopPropagation(); remove(id); });
  codeBox.append(deleteButton);

  const meta = [message.source && "from " + message.source, message.type, message.locale,
    timeOf(message)].filter(Boolean).join(" · ");
  const summary = el("div", { class: "summary", role: "button", tabindex: "0",
    "aria-expanded": "false" },
  el("span", { class: "chan " + message.channel, text: message.channel === "sms" ? "SMS" : "Email" }),
  el("div", { class: "who" },
    el("div", { class: "to", text: message.to }),
    el("div", { class: "meta", text: meta, title: message.created_at })),
  codeBox,
  message.subject ? el("div", { class: "subject", text: message.subject }) : null);
  const detail = el("div", { class: "detail", hidden: "" });
  const node = el("li", { class: "msg", "data-id": id }, summary, detail);

  const toggle = () => {
    const opening = detail.hidden;
    if (opening && !detail.firstChild) fillDetail(message, detail);
    detail.hidden = !opening;
    summary.setAttribute("aria-expanded", String(opening));
    if (opening) state.open.add(id); else state.open.delete(id);
  };
  summary.addEventListener("click", toggle);
  summary.addEventListener("keydown", (event) => {
    if (event.target === summary && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      toggle();
    }
  });
  return node;
}

function linkLine(message) {
  if (!message.link || !/^https?:\/\//i.test(message.link)) return null;
  return el("p", { class: "link" }, "Link: ",
    el("a", { href: message.link, target: "_blank", rel: "noopener noreferrer", text: message.link }));
}

function fillDetail(message, detail) {
  const link = linkLine(message);
  if (link) detail.append(link);
  if (message.channel === "sms") {
    const sms = message.sms || {};
    const facts = [sms.encoding, sms.segments != null ? sms.segments + " segment" +
      (sms.segments === 1 ? "" : "s") : null, sms.units != null ? sms.units + " units" : null];
    detail.append(el("div", { class: "phone" },
      el("div", { class: "from", text: "To " + message.to }),
      el("div", { class: "bubble", text: message.text }),
      el("div", { class: "sms-facts", text: facts.filter(Boolean).join(" · ") })));
    return;
  }
  const panes = {};
  if (message.html) {
    const frame = el("iframe", { class: "preview", title: "Email preview",
      sandbox: "allow-popups allow-popups-to-escape-sandbox", referrerpolicy: "no-referrer" });
    frame.srcdoc = PREVIEW_HEAD + message.html;
    panes.HTML = frame;
  }
  panes.Text = el("pre", { class: "text", text: message.text });
  const table = el("table", { class: "headers" });
  for (const [name, value] of message.headers || []) {
    table.append(el("tr", {}, el("th", { text: name }), el("td", { text: value })));
  }
  panes.Headers = table;
  const tabs = el("div", { class: "tabs", role: "tablist" });
  const show = (name) => {
    state.tabs.set(message.id, name);
    for (const [pane, node] of Object.entries(panes)) node.hidden = pane !== name;
    for (const button of tabs.children) {
      button.setAttribute("aria-selected", String(button.dataset.pane === name));
    }
  };
  for (const name of Object.keys(panes)) {
    const button = el("button", { type: "button", role: "tab", "data-pane": name, text: name });
    button.addEventListener("click", () => show(name));
    tabs.append(button);
  }
  detail.append(tabs, ...Object.values(panes));
  show(state.tabs.get(message.id) || Object.keys(panes)[0]);
}

// -- empty-inbox help, then go

function help() {
  const origin = window.location.origin;
  $("help-email").textContent = origin + "/v1/email";
  $("help-sms").textContent = origin + "/v1/sms";
  $("help-send").textContent = "otp-service send --server " + origin +
    " --channel email --to you@example.com --code 123456";
}

help();
start(false);
