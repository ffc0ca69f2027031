// The merc page: label a pasted conversation, a recording, or a live conversation over the WebSocket.
// Plain JS, no libraries, nothing from the internet.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PALETTE = ["#d1495b", "#edae49", "#66a182", "#00798c", "#30638e", "#8d6a9f", "#a0a0a0", "#e07a5f",
                 "#3d405b", "#81b29a"];
const state = { labels: [], rows: [], live: [], token: sessionStorage.getItem("merc-token") || "", ws: null, speaker: null };

// helpers

function color(label) { return PALETTE[state.labels.indexOf(label) % PALETTE.length] || "#999"; }

function headers(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (response.status === 401) $("#token-box").hidden = false;
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  return body;
}

function svg(tag, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// drawing: a table and a timeline (stacked probabilities per utterance; hover for the numbers)

function render(title) {
  $("#result").hidden = state.rows.length === 0;
  $("#result-title").textContent = title;
  const body = $("#table tbody");
  body.replaceChildren();
  for (const [i, r] of state.rows.entries()) {
    const tr = body.insertRow();
    if (r.revised) tr.className = "revised";
    tr.insertCell().textContent = i;
    tr.insertCell().textContent = r.speaker;
    tr.insertCell().textContent = r.text;
    const cell = tr.insertCell();
    cell.className = "label";
    const dot = document.createElement("i");
    dot.style.background = color(r.predicted);
    cell.append(dot, r.predicted);
    tr.insertCell().textContent = r.probabilities[r.predicted].toFixed(2);
  }
  drawTimeline();
  $("#legend").replaceChildren(...state.labels.map((l) => {
    const span = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = color(l);
    span.append(sw, l);
    return span;
  }));
}

function drawTimeline() {
  const el = $("#timeline");
  el.replaceChildren();
  const W = el.clientWidth || 900, H = el.clientHeight || 220, pad = { l: 8, r: 8, t: 10, b: 28 };
  el.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const n = state.rows.length;
  if (!n) return;
  const step = (W - pad.l - pad.r) / Math.max(n, 1), bar = Math.max(2, step * 0.8), h = H - pad.t - pad.b;
  const tip = $("#tooltip");
  state.rows.forEach((r, i) => {
    const g = svg("g", { class: "utterance", "data-index": i }, el);
    let y = pad.t + h;
    for (const label of state.labels) {
      const p = r.probabilities[label] || 0, bh = p * h;
      y -= bh;
      svg("rect", { x: pad.l + i * step, y, width: bar, height: bh, fill: color(label),
                    opacity: label === r.predicted ? 1 : 0.35 }, g);
    }
    const t = svg("text", { x: pad.l + i * step + bar / 2, y: H - 10, "text-anchor": "middle", "font-size": 11,
                            fill: "#6b7385" }, g);
    t.textContent = r.speaker.slice(0, Math.max(1, Math.floor(step / 7)));
    g.addEventListener("mousemove", (e) => {
      const lines = state.labels.map((l) => `${l} ${(r.probabilities[l] || 0).toFixed(2)}`);
      tip.innerHTML = "";
      const head = document.createElement("b");
      head.textContent = `#${i} ${r.speaker}: ${r.predicted}`;
      tip.append(head, ...lines.map((s) => Object.assign(document.createElement("div"), { textContent: s })));
      const box = el.getBoundingClientRect();
      tip.style.left = `${e.clientX - box.left + 12}px`;
      tip.style.top = `${e.clientY - box.top + 12}px`;
      tip.hidden = false;
    });
    g.addEventListener("mouseleave", () => { tip.hidden = true; });
  });
}

function showRecord(record, title) {
  state.rows = record.utterances.map((u) => ({ speaker: u.speaker, text: u.text, predicted: u.predicted,
                                               probabilities: u.probabilities }));
  render(title || record.conversation_id);
}

// conversation

async function predict() {
  showError("");
  const text = $("#conversation").value.trim();
  const json = text.startsWith("{");
  try {
    const record = await api("/v1/predict", { method: "POST", body: text,
      headers: { "Content-Type": json ? "application/json" : "text/plain; charset=utf-8" } });
    showRecord(record, "Conversation");
  } catch (e) { showError(e.message); }
}

// recording

async function upload() {
  showError("");
  const file = $("#recording-file").files[0], transcript = $("#transcript-file").files[0];
  if (!file) { showError("choose a recording first"); return; }
  const form = new FormData();
  form.append("file", file);
  if (transcript) form.append("transcript", transcript);
  try {
    let job = await api("/v1/recordings", { method: "POST", body: form });
    $("#job").hidden = false;
    while (!["done", "failed"].includes(job.status)) {
      $("#job-progress").value = job.progress;
      $("#job-status").textContent = `${job.status} (${job.elapsed.toFixed(1)} s)`;
      await new Promise((ok) => setTimeout(ok, 400));
      job = await api(`/v1/recordings/${job.id}`);
    }
    $("#job-progress").value = 1;
    $("#job-status").textContent = `${job.status}${job.utterances ? `: ${job.utterances} utterances` : ""}`;
    if (job.status === "failed") showError(job.error);
    else showRecord(job.result, job.media);
  } catch (e) { showError(e.message); }
}

// live

function speakerButtons(names) {
  const box = $("#speakers");
  for (const name of names) {
    const b = document.createElement("button");
    b.className = "speaker";
    b.textContent = name;
    b.type = "button";
    b.onclick = () => selectSpeaker(name);
    box.appendChild(b);
  }
  if (!state.speaker) selectSpeaker(names[0]);
}

function selectSpeaker(name) {
  state.speaker = name;
  for (const b of document.querySelectorAll("button.speaker")) b.classList.toggle("active", b.textContent === name);
}

function connect() {
  if (state.ws && state.ws.readyState <= 1) return state.ws;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => { if (state.token) ws.send(JSON.stringify({ token: state.token })); };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.error) { showError(msg.error); if (msg.status === 401) $("#token-box").hidden = false; return; }
    if (msg.ready) { $("#live-mode").textContent = msg.mode === "step"
        ? "causal model, one step per utterance" : "the model rereads the conversation; earlier labels may change";
      $("#live-state").textContent = "connected"; return; }
    if (msg.reset) { state.live = []; showLive(); return; }
    showError("");
    state.live[msg.index] = { speaker: msg.speaker, text: msg.text, predicted: msg.predicted,
                              probabilities: msg.probabilities };
    for (const r of msg.revised || []) {
      Object.assign(state.live[r.index], { predicted: r.predicted, probabilities: r.probabilities, revised: true });
    }
    showLive();
  };
  ws.onclose = () => { $("#live-state").textContent = "disconnected"; };
  return ws;
}

function sendLive(event) {
  event.preventDefault();
  const text = $("#live-text").value.trim();
  if (!text) return;
  const ws = connect();
  const send = () => ws.send(JSON.stringify({ speaker: state.speaker, text }));
  if (ws.readyState === 1) send(); else ws.addEventListener("open", send, { once: true });
  $("#live-text").value = "";
}

function showLive() {
  if ($("#tab-live").hidden) return;
  state.rows = state.live;
  render("Live");
}

// wiring

function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name === "live") { connect(); showLive(); }
}

async function loadModel() {
  try {
    const m = await api("/v1/model");
    state.labels = m.labels;
    $("#model").textContent = `${m.run}: ${m.model}, ${m.causal ? "causal" : "bidirectional"}, `
      + `${m.modalities.join(" + ")}; labels ${m.labels.join(", ")}`;
  } catch (e) { $("#model").textContent = "model unavailable"; showError(e.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tabs button")) b.onclick = () => showTab(b.dataset.tab);
  $("#predict").onclick = predict;
  $("#upload").onclick = upload;
  $("#live-form").onsubmit = sendLive;
  $("#reset").onclick = () => connect().readyState === 1 && state.ws.send(JSON.stringify({ reset: true }));
  $("#add-speaker").onclick = () => {
    const name = $("#new-speaker").value.trim();
    if (name) { speakerButtons([name]); selectSpeaker(name); $("#new-speaker").value = ""; }
  };
  $("#conversation-file").onchange = async (e) => {
    const f = e.target.files[0];
    if (f) $("#conversation").value = await f.text();
  };
  $("#token").value = state.token;
  $("#token").onchange = (e) => {
    state.token = e.target.value;
    sessionStorage.setItem("merc-token", state.token);
    if (state.ws) state.ws.close();
    loadModel();
  };
  speakerButtons(["Ann", "Bob"]);
  loadModel();
});
