// dermdx clinician page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Every value from the server is written with textContent (never innerHTML).
"use strict";

const TOKEN_KEY = "dermdx-token";
const PAGE_SIZE = 10;
const CLASS_NAMES = {
  mel: "Melanoma",
  nv: "Melanocytic nevus",
  bcc: "Basal cell carcinoma",
  akiec: "Actinic keratosis / intraepithelial carcinoma",
  bkl: "Benign keratosis",
  df: "Dermatofibroma",
  vasc: "Vascular lesion",
};
// Report sections that other dermdx modules will fill; each is shown when the report has it.
const EXTRA_SECTIONS = [
  ["triage", "Triage"],
  ["recommendation", "Recommendation"],
  ["heatmap", "Heatmap"],
];

const state = { token: sessionStorage.getItem(TOKEN_KEY), classes: [], offset: 0, total: 0, file: null, current: null, imageUrl: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function className(name) {
  return CLASS_NAMES[name] ? `${name} — ${CLASS_NAMES[name]}` : name;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: `Bearer ${state.token}` });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut("The token was not accepted; enter it again.");
    throw new ApiError("not signed in");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) { /* not JSON */ }
    throw new ApiError(detail);
  }
  return response;
}

// ------------------------------------------------------------------ sign in

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
}

async function signIn(token) {
  state.token = token;
  let me;
  try {
    me = await (await api("/api/me")).json();
    const models = await (await api("/api/models")).json();
    state.classes = models[0].classes;
  } catch (error) {
    if (state.token) signOut(error.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${me.name} (${me.role})`;
  fillClassSelects();
  showTab("new");
  loadHistory();
}

function fillClassSelects() {
  const diagnosis = $("final-diagnosis");
  const predicted = $("filter-predicted");
  diagnosis.replaceChildren(new Option("not given", ""));
  predicted.replaceChildren(new Option("any", ""));
  for (const name of state.classes) {
    diagnosis.add(new Option(className(name), name));
    predicted.add(new Option(className(name), name));
  }
  diagnosis.add(new Option("other (type it)", "__other__"));
}

// ------------------------------------------------------------------ tabs

function showTab(which) {
  $("tab-new").classList.toggle("active", which === "new");
  $("tab-history").classList.toggle("active", which === "history");
  $("new-case").hidden = which !== "new";
  $("history").hidden = which !== "history";
  if (which === "history") loadHistory();
}

// ------------------------------------------------------------------ new case

function pickFile(input) {
  const file = input.files && input.files[0];
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const size = file.size < 1e6 ? `${Math.ceil(file.size / 1e3)} kB` : `${(file.size / 1e6).toFixed(1)} MB`;
  $("photo-name").textContent = `Photo selected (${size}).`;
  $("case-error").textContent = "";
}

async function submitCase(event) {
  event.preventDefault();
  $("case-error").textContent = "";
  if (!state.file) {
    $("case-error").textContent = "Choose or take a photo first.";
    return;
  }
  const form = new FormData();
  form.append("image", state.file);
  if ($("age").value !== "") form.append("age", $("age").value);
  form.append("sex", $("sex").value);
  form.append("site", $("site").value);
  $("analyse").disabled = true;
  $("busy").hidden = false;
  try {
    const created = await (await api("/api/cases", { method: "POST", body: form })).json();
    await showCase(created);
  } catch (error) {
    $("case-error").textContent = error.message;
  } finally {
    $("analyse").disabled = false;
    $("busy").hidden = true;
  }
}

// ------------------------------------------------------------------ report

async function openCase(id) {
  try {
    const found = await (await api(`/api/cases/${encodeURIComponent(id)}`)).json();
    await showCase(found);
  } catch (error) {
    $("history-error").textContent = error.message;
  }
}

async function showCase(item) {
  state.current = item;
  const report = item.report;
  $("result").hidden = false;
  $("result-meta").textContent = `case ${item.id.slice(0, 8)} · ${new Date(item.created_at).toLocaleString()}`;
  $("result-patient").textContent = `age ${item.age ?? "unknown"} · sex ${item.sex} · site ${item.site}`;
  renderChart(report.probabilities);
  const differential = $("differential");
  differential.replaceChildren(...report.differential.map((d) => el("li", `${className(d.class)}: ${percent(d.probability)}`)));
  renderAbstention(report.abstention);
  renderExtras(report);
  $("report-disclaimer").textContent = report.disclaimer;
  $("model-line").textContent = `Model ${report.model.name}, SHA-256 ${report.model.sha256.slice(0, 16)}…, dermdx ${report.model.dermdx_version}`;
  renderFeedback(item.feedback);
  $("feedback-ok").textContent = "";
  $("feedback-error").textContent = "";
  await loadImage(item);
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

function renderChart(probabilities) {
  const rows = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  $("chart").replaceChildren(
    ...rows.map(([name, p]) => {
      const row = el("div", null, "bar-row");
      row.dataset.class = name;
      const label = el("span", className(name), "bar-label");
      const track = el("span", null, "bar-track");
      const fill = el("span", null, "bar-fill");
      fill.style.width = `${Math.max(0, Math.min(100, 100 * p)).toFixed(1)}%`;
      track.append(fill);
      row.append(label, track, el("span", percent(p), "bar-value"));
      return row;
    }),
  );
}

function renderAbstention(abstention) {
  const box = $("abstention");
  box.replaceChildren();
  // The report carries the decision either way; only a refusal is shown.
  const refused = abstention === true || (abstention !== null && typeof abstention === "object" && abstention.abstain === true);
  box.hidden = !refused;
  if (!refused) return;
  box.append(el("h2", "Refer: uncertain (the model abstains)"), renderValue(abstention.reason || abstention));
}

function isImageData(value) {
  return typeof value === "string" && value.startsWith("data:image/");
}

function renderValue(value) {
  if (isImageData(value)) {
    const image = el("img", null, "extra-image");
    image.src = value;
    image.alt = "";
    return image;
  }
  if (value === null || typeof value !== "object") return el("p", value === true ? "yes" : value);
  const list = el("dl", null, "kv");
  for (const [key, inner] of Object.entries(value)) {
    if (isImageData(inner)) continue; // image fields are drawn over the photo
    list.append(el("dt", key.replace(/_/g, " ")));
    if (Array.isArray(inner) && inner.every((item) => typeof item !== "object")) {
      const dd = el("dd");
      const items = el("ul");
      items.append(...inner.map((item) => el("li", item)));
      dd.append(items);
      list.append(dd);
      continue;
    }
    list.append(el("dd", typeof inner === "object" && inner !== null ? JSON.stringify(inner) : inner));
  }
  return list;
}

function heatmapImage(heatmap) {
  if (isImageData(heatmap)) return heatmap;
  if (heatmap && typeof heatmap === "object") return Object.values(heatmap).find(isImageData) || null;
  return null;
}

function renderExtras(report) {
  const extras = $("extras");
  extras.replaceChildren();
  for (const [key, title] of EXTRA_SECTIONS) {
    const value = report[key];
    if (value === null || value === undefined) continue;
    const section = el("section", null, `extra extra-${key}`);
    section.append(el("h2", title));
    if (key !== "heatmap" || !isImageData(value)) section.append(renderValue(value));
    extras.append(section);
  }
  const overlay = $("heatmap-overlay");
  const source = heatmapImage(report.heatmap);
  overlay.hidden = !source;
  $("heatmap-toggle-label").hidden = !source;
  if (source) {
    overlay.src = source;
    $("heatmap-toggle").checked = true;
  } else {
    overlay.removeAttribute("src");
  }
}

async function loadImage(item) {
  const image = $("result-image");
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = null;
  image.removeAttribute("src");
  try {
    const blob = await (await api(item.image_url)).blob();
    state.imageUrl = URL.createObjectURL(blob);
    image.src = state.imageUrl;
  } catch (error) {
    image.alt = `photo not available: ${error.message}`;
  }
}

// ------------------------------------------------------------------ feedback

function renderFeedback(entries) {
  const list = $("feedback-list");
  if (!entries.length) {
    list.replaceChildren(el("li", "No feedback yet.", "muted"));
    return;
  }
  list.replaceChildren(
    ...entries.map((f) => {
      const parts = [new Date(f.created_at).toLocaleString(), f.created_by];
      if (f.final_diagnosis) parts.push(`final diagnosis: ${className(f.final_diagnosis)}`);
      if (f.agrees !== null) parts.push(f.agrees ? "agrees with the model" : "disagrees with the model");
      if (f.comment) parts.push(`“${f.comment}”`);
      return el("li", parts.join(" · "));
    }),
  );
}

async function submitFeedback(event) {
  event.preventDefault();
  $("feedback-error").textContent = "";
  $("feedback-ok").textContent = "";
  if (!state.current) return;
  const choice = $("final-diagnosis").value;
  const diagnosis = choice === "__other__" ? $("final-other").value.trim() : choice;
  const agreesValue = document.querySelector("input[name=agrees]:checked").value;
  const body = {};
  if (diagnosis) body.final_diagnosis = diagnosis;
  if (agreesValue !== "") body.agrees = agreesValue === "yes";
  const comment = $("comment").value.trim();
  if (comment) body.comment = comment;
  if (body.final_diagnosis === undefined && body.agrees === undefined) {
    $("feedback-error").textContent = "Give a final diagnosis, agree or disagree, or both.";
    return;
  }
  try {
    const response = await api(`/api/cases/${encodeURIComponent(state.current.id)}/feedback`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const updated = await response.json();
    state.current = updated;
    renderFeedback(updated.feedback);
    $("feedback-ok").textContent = "Feedback saved.";
    $("feedback-form").reset();
    $("final-other-label").hidden = true;
    loadHistory();
  } catch (error) {
    $("feedback-error").textContent = error.message;
  }
}

// ------------------------------------------------------------------ history

async function loadHistory() {
  $("history-error").textContent = "";
  const params = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE_SIZE) });
  const diagnosis = $("filter-diagnosis").value.trim();
  const predicted = $("filter-predicted").value;
  if (diagnosis) params.set("diagnosis", diagnosis);
  if (predicted) params.set("predicted", predicted);
  let page;
  try {
    page = await (await api(`/api/cases?${params}`)).json();
  } catch (error) {
    $("history-error").textContent = error.message;
    return;
  }
  state.total = page.total;
  $("history-rows").replaceChildren(
    ...page.items.map((item) => {
      const row = el("tr");
      row.dataset.caseId = item.id;
      const top = item.report.probabilities[item.predicted];
      const open = el("button", "Open", "link");
      open.type = "button";
      open.addEventListener("click", () => openCase(item.id));
      const cells = [
        el("td", new Date(item.created_at).toLocaleString()),
        el("td", item.id.slice(0, 8), "mono"),
        el("td", `${className(item.predicted)} (${percent(top)})`),
        el("td", item.final_diagnosis ? className(item.final_diagnosis) : "—", "final"),
        el("td", String(item.feedback.length)),
        el("td"),
      ];
      cells[5].append(open);
      row.append(...cells);
      return row;
    }),
  );
  if (!page.items.length) {
    const empty = el("tr");
    const cell = el("td", "No cases.", "muted");
    cell.colSpan = 6;
    empty.append(cell);
    $("history-rows").append(empty);
  }
  const first = page.total ? page.offset + 1 : 0;
  $("page-info").textContent = `${first}–${page.offset + page.items.length} of ${page.total}`;
  $("prev-page").disabled = page.offset === 0;
  $("next-page").disabled = page.offset + page.items.length >= page.total;
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("tab-new").addEventListener("click", () => showTab("new"));
  $("tab-history").addEventListener("click", () => showTab("history"));
  $("image").addEventListener("change", (event) => pickFile(event.target));
  $("camera").addEventListener("change", (event) => pickFile(event.target));
  $("case-form").addEventListener("submit", submitCase);
  $("feedback-form").addEventListener("submit", submitFeedback);
  $("final-diagnosis").addEventListener("change", (event) => {
    $("final-other-label").hidden = event.target.value !== "__other__";
  });
  $("heatmap-toggle").addEventListener("change", (event) => {
    $("heatmap-overlay").hidden = !event.target.checked;
  });
  $("filter-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.offset = 0;
    loadHistory();
  });
  $("prev-page").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadHistory();
  });
  $("next-page").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadHistory();
  });
  if (state.token) signIn(state.token);
});
