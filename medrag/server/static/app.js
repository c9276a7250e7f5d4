// medrag web page: ask, watch the agent's steps stream in, read the cited answer.
// Plain JS, no build step and no CDN. Text from the server is always set with
// textContent (never innerHTML), so passages cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("medrag-token") || "", auth: false, files: [], thread: newThreadId(), answer: null, blobs: {} };

function newThreadId() {
  const rnd = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now()).replace(/[^A-Za-z0-9-]/g, "");
  return "web-" + rnd.slice(0, 40);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function headers(extra = {}) {
  return state.token ? { ...extra, Authorization: "Bearer " + state.token } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) throw await asError(response);
  return response.json();
}

async function asError(response) {
  let code = "http_" + response.status, message = response.statusText;
  try { const body = await response.json(); code = body.error.code; message = body.error.message; } catch (_) { /* not JSON */ }
  if (response.status === 401) $("auth").hidden = false;
  const err = new Error(message); err.code = code; err.status = response.status; return err;
}

// Assets are fetched with the token (an <img src> cannot send it) and shown from blob URLs.
async function assetUrl(id) {
  if (!state.auth) return "/v1/assets/" + encodeURIComponent(id);
  if (!state.blobs[id]) {
    const response = await fetch("/v1/assets/" + encodeURIComponent(id), { headers: headers() });
    if (!response.ok) throw await asError(response);
    state.blobs[id] = URL.createObjectURL(await response.blob());
  }
  return state.blobs[id];
}

function image(id, alt, onload) {
  const img = el("img", { alt, loading: "lazy" });
  if (onload) img.addEventListener("load", () => onload(img));
  assetUrl(id).then((url) => { img.src = url; }).catch((e) => { img.alt = alt + " (" + e.message + ")"; });
  return img;
}

// ---------- start-up ----------
async function init() {
  try {
    const health = await api("/v1/health");
    state.auth = health.auth;
    $("safety").textContent = health.safety_note || "";
    if (health.auth && !state.token) $("auth").hidden = false;
    $("token").value = state.token;
    await loadIndexes(health.default_index);
  } catch (e) { setStatus("Server unreachable: " + e.message, true); }
}

async function loadIndexes(preferred) {
  const select = $("index");
  select.replaceChildren();
  try {
    const data = await api("/v1/indexes");
    for (const idx of data.indexes) {
      select.append(el("option", { value: idx.name, text: `${idx.name} (${idx.chunks} passages)`, selected: idx.name === (preferred || data.default) }));
    }
    if (!data.indexes.length) select.append(el("option", { value: "", text: "no index yet" }));
  } catch (e) {
    select.append(el("option", { value: "", text: "indexes unavailable" }));
    if (e.status !== 401) setStatus(e.message, true);
  }
}

function setStatus(text, bad = false) {
  const status = $("status");
  status.textContent = text;
  status.style.color = bad ? "var(--bad)" : "";
}

// ---------- attachments ----------
function addFiles(list) {
  for (const file of list) state.files.push(file);
  renderFiles();
}

function renderFiles() {
  const ul = $("attached");
  $("imgopts").hidden = !state.files.length;
  ul.replaceChildren(...state.files.map((file, i) => el("li", {}, file.name,
    el("button", { type: "button", "aria-label": "remove " + file.name, text: "×", onclick: () => { state.files.splice(i, 1); renderFiles(); } }))));
}

function setupDrop() {
  const drop = $("drop"), input = $("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
}

// ---------- asking ----------
async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) { setStatus("Type a question first.", true); return; }
  const button = $("ask");
  button.disabled = true;
  setStatus("Thinking…");
  $("steps").replaceChildren();
  archiveAnswer();
  const fields = { question, index: $("index").value || null, thread_id: state.thread };
  let body, extra = {};
  if (state.files.length) {
    body = new FormData();
    for (const [key, value] of Object.entries(fields)) if (value) body.append(key, value);
    for (const file of state.files) body.append("images", file, file.name);
    if ($("modality").value) body.append("modality", $("modality").value);
    if ($("body-part").value) body.append("body_part", $("body-part").value);
  } else {
    body = JSON.stringify(fields);
    extra = { "Content-Type": "application/json" };
  }
  const started = performance.now();
  try {
    const response = await fetch("/v1/ask/stream", { method: "POST", body, headers: headers(extra) });
    if (!response.ok) throw await asError(response);
    await readEvents(response, (kind, data) => {
      if (kind === "step") addStep(data);
      else if (kind === "answer") {
        showAnswer(data);
        setStatus(`Answered in ${((performance.now() - started) / 1000).toFixed(1)} s`);
        if (window.matchMedia("(max-width: 820px)").matches) $("banner").scrollIntoView({ behavior: "smooth", block: "start" });
      }
      else if (kind === "error") throw Object.assign(new Error(data.error.message), { code: data.error.code });
    });
    state.files = []; renderFiles();
  } catch (e) {
    setStatus((e.code ? e.code + ": " : "") + e.message, true);
  } finally {
    button.disabled = false;
  }
}

async function readEvents(response, handle) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) handle(kind, JSON.parse(data));
    }
  }
}

// Steps: known keys get a place; any other key is shown in the details below.
function addStep(step) {
  const name = step.step || step.node || "step";
  const ms = step.ms !== undefined ? step.ms : (step.duration_s || 0) * 1000;
  const summary = step.outputs_summary || step.summary || "";
  const failed = (step.details && step.details.ok === false) || /failed|error/i.test(summary);
  const li = el("li", { class: "step" + (failed ? " failed" : ""), "data-kind": name, "data-testid": "step" },
    el("span", { class: "ms", text: (step.round ? `round ${step.round} · ` : "") + `${Math.round(ms)} ms` }),
    el("span", { class: "name", text: name }),
    step.tool ? el("span", { class: "tool", text: step.tool }) : null,
    el("div", { class: "summary", text: summary }));
  const rest = {};
  for (const [key, value] of Object.entries(step)) {
    if (["step", "node", "ms", "duration_s", "outputs_summary", "summary", "tool", "round", "assets"].includes(key)) continue;
    if (value === null || (typeof value === "object" && !Object.keys(value).length)) continue;
    rest[key] = value;
  }
  if (Object.keys(rest).length) li.append(el("details", {}, el("summary", { text: "details" }), el("pre", { text: JSON.stringify(rest, null, 2) })));
  $("steps").append(li);
}

function archiveAnswer() {
  const a = state.answer;
  if (!a) return;
  $("history").append(el("div", { class: "turn" }, el("b", { text: "Q: " }), a.question, el("br"), el("b", { text: "A: " }), a.answer));
  state.answer = null;
}

function showAnswer(data) {
  state.answer = data;
  $("empty").hidden = true;
  banner(data);
  const box = $("answer");
  box.hidden = false;
  box.replaceChildren(el("p", { class: "question", text: data.question }));
  const p = el("p", { "data-testid": "answer-text" });
  if (data.sentences && data.sentences.length && !data.abstained) {
    for (const sentence of data.sentences) {
      p.append(sentence.text + " ");
      for (const n of sentence.citations) p.append(citeButton(n));
      p.append(" ");
    }
  } else {
    p.textContent = data.answer;
  }
  box.append(p);
  if (data.rationale && data.rationale.length) {
    box.append(el("details", {}, el("summary", { text: "How this answer was reached" }),
      el("ul", {}, ...data.rationale.map((r) => el("li", { text: r })))));
  }
  showImages(data);
  const sources = $("sources");
  sources.replaceChildren(...(data.citations || []).map((c) => el("li", {},
    el("a", { text: c.title || c.source, onclick: () => openCard(c.n), href: "#" }),
    el("span", { class: "where", text: " " + where(c) }))));
  sources.querySelectorAll("a").forEach((a) => a.addEventListener("click", (e) => e.preventDefault()));
}

function citeButton(n) {
  return el("button", { type: "button", class: "cite", "data-n": n, "aria-label": "source " + n, text: `[${n}]`, onclick: () => openCard(n) });
}

// Locator fields that are file paths or long text: shown as pictures or in the card, not in the source line.
const HIDDEN_LOCATOR = ["overlay", "crop", "thumbnail", "image", "figure_image", "caption", "boxes", "tool"];

function where(c) {
  const parts = [c.source];
  if (c.page) parts.push("p. " + c.page);
  for (const [key, value] of Object.entries(c.locator || {})) {
    if (!value || typeof value === "object" || HIDDEN_LOCATOR.includes(key)) continue;
    parts.push(String(value).toLowerCase().startsWith(key.toLowerCase()) ? String(value) : `${key} ${value}`);
  }
  parts.push("score " + Number(c.score || 0).toFixed(2));
  return "— " + parts.join(", ");
}

function banner(data) {
  const b = $("banner");
  const conf = Number(data.confidence || 0);
  const level = data.abstained ? "abstained" : conf >= 0.7 ? "high" : conf >= 0.45 ? "moderate" : "low";
  b.className = "banner " + level;
  b.hidden = false;
  const head = data.abstained ? "The agent abstained: not enough evidence. " : `Confidence ${conf.toFixed(2)} (${level}). `;
  b.replaceChildren(el("span", { class: "conf", "data-testid": "confidence", text: head }));
  const notes = (data.notes && data.notes.length) ? data.notes : [$("safety").textContent];
  b.append(el("ul", {}, ...notes.filter(Boolean).map((n) => el("li", { text: n }))));
}

// The user's images with the overlays expert tools drew on them.
function showImages(data) {
  const box = $("images");
  const uploads = data.uploads || [], overlays = data.overlays || [];
  box.hidden = !uploads.length && !overlays.length;
  box.replaceChildren();
  for (const up of uploads) {
    if (!up.asset) continue;
    box.append(el("figure", {}, image(up.asset, up.name), el("figcaption", { text: `${up.name} · ${up.modality} · ${up.size.join("×")}` })));
  }
  for (const ov of overlays) {
    box.append(el("figure", { "data-testid": "overlay" }, image(ov.id, ov.kind), el("figcaption", { text: ov.kind === "crop" ? "zoomed region" : "tool overlay" })));
  }
}

// ---------- citation card ----------
function openCard(n) {
  const c = (state.answer && state.answer.citations || []).find((x) => x.n === n);
  if (!c) return;
  $("card-title").textContent = `[${n}] ${c.title || c.source}`;
  $("card-meta").textContent = where(c).slice(2);
  const visual = $("card-visual");
  visual.replaceChildren();
  const assets = c.assets || {};
  if (assets.thumbnail) {
    const wrap = el("div", { class: "thumbwrap", "data-testid": "thumbnail" });
    wrap.append(image(assets.thumbnail, `page ${c.page || ""} of ${c.source}`, (img) => highlight(wrap, img, c)));
    visual.append(el("figure", {}, wrap, el("figcaption", { text: c.page ? `page ${c.page}, cited passage highlighted` : "page" })));
  }
  for (const [kind, label] of [["figure", "figure"], ["case", "similar case"], ["overlay", "tool overlay"], ["crop", "zoomed region"]]) {
    if (assets[kind]) visual.append(el("figure", { "data-testid": kind }, image(assets[kind], label), el("figcaption", { text: label })));
  }
  const passage = $("card-passage");
  passage.replaceChildren();
  const cited = (state.answer.sentences || []).filter((s) => s.citations.includes(n)).map((s) => s.text);
  const text = c.passage || (c.locator && c.locator.caption);
  if (text) {
    passage.append(...marked(text, cited));
  } else if (cited.length) {
    passage.append(el("mark", { text: cited.join(" ") }));
  }
  passage.hidden = !passage.childNodes.length;
  $("card").hidden = false;
  $("card-backdrop").hidden = false;
  $("card-close").focus();
}

// The passage with the sentences the answer quoted from it marked.
function marked(text, sentences) {
  let parts = [text];
  for (const s of sentences) {
    const next = [];
    for (const part of parts) {
      const at = typeof part === "string" ? part.indexOf(s) : -1;
      if (at < 0) { next.push(part); continue; }
      next.push(part.slice(0, at), el("mark", { text: s }), part.slice(at + s.length));
    }
    parts = next;
  }
  return parts.filter((p) => p !== "");
}

// Place the cited bbox (PDF points) over the page thumbnail.
function highlight(wrap, img, c) {
  if (!c.bbox || !c.page_size || !img.naturalWidth) return;
  const [w, h] = c.page_size, [x0, y0, x1, y1] = c.bbox;
  const box = el("div", { class: "hl", "data-testid": "bbox" });
  Object.assign(box.style, { left: `${(100 * x0) / w}%`, top: `${(100 * y0) / h}%`, width: `${(100 * (x1 - x0)) / w}%`, height: `${(100 * (y1 - y0)) / h}%` });
  wrap.append(box);
}

function closeCard() {
  $("card").hidden = true;
  $("card-backdrop").hidden = true;
}

// ---------- wiring ----------
$("ask-form").addEventListener("submit", ask);
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask-form").requestSubmit(); });
$("card-close").addEventListener("click", closeCard);
$("card-backdrop").addEventListener("click", closeCard);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeCard(); });
$("new-thread").addEventListener("click", () => {
  state.thread = newThreadId(); state.answer = null;
  for (const id of ["history", "steps", "sources", "answer", "images"]) $(id).replaceChildren();
  $("banner").hidden = true; $("answer").hidden = true; $("empty").hidden = false; setStatus("New conversation");
});
$("save-token").addEventListener("click", () => {
  state.token = $("token").value.trim();
  localStorage.setItem("medrag-token", state.token);
  $("auth").hidden = true;
  loadIndexes();
});
setupDrop();
init();
