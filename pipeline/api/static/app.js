// Carnet's patient page: talks to the API with the portal's bearer token, which stays in
// memory only (never stored, never put back in a URL). Text from the API is inserted with
// textContent, never as HTML.
"use strict";

const CLASSES = { biology: "Biologie", imaging: "Imagerie", prescription: "Ordonnance", other: "Autre" };
const ACTIONS = {
  search: "recherche", read: "consultation", download: "téléchargement", grant: "autorisation",
  revoke: "révocation", visibility: "visibilité", break_glass: "accès en urgence", denied: "accès refusé",
  erase: "suppression", upload: "ajout de document",
};
const PAGE = 10;
const state = { token: null, me: null, offset: 0, total: 0 };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${state.token}` },
  });
  if (!response.ok) {
    const messages = { 401: "Session invalide ou expirée.", 403: "Accès refusé.", 404: "Document introuvable.",
      413: "Fichier trop volumineux (20 Mo au plus).", 415: "Type de fichier non accepté (PDF, JPEG, PNG, TIFF)." };
    throw new Error(messages[response.status] || `Erreur ${response.status}`);
  }
  return response;
}

function patientId() {
  return state.me.role === "patient" ? state.me.subject : $("patient").value.trim().toUpperCase();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// Snippets mark matching words as [word]: render them as <mark> without parsing HTML.
function snippetNode(snippet) {
  const p = el("p", "snippet");
  for (const part of snippet.split(/(\[[^\]]*\])/)) {
    if (part.startsWith("[") && part.endsWith("]")) p.appendChild(el("mark", null, part.slice(1, -1)));
    else if (part) p.appendChild(document.createTextNode(part));
  }
  return p;
}

async function connect(token) {
  state.token = token.trim();
  try {
    state.me = await (await api("/me")).json();
  } catch (error) {
    state.token = null;
    setStatus(error.message, true);
    $("who").textContent = "Non connecté";
    return;
  }
  const who = state.me.name || state.me.subject;
  $("who").textContent = `Connecté : ${who} (${state.me.role})`;
  const other = state.me.role !== "patient";
  $("patient").hidden = !other;
  $("patient-label").hidden = !other;
  $("login").hidden = true;
  $("main").hidden = false;
  setStatus("");
  if (!other) await search(0);
}

async function search(offset) {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  for (const [id, name] of [["q", "q"], ["class", "class"], ["since", "since"], ["until", "until"]]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  setStatus("Recherche…");
  try {
    const page = await (await api(`/patients/${encodeURIComponent(patientId())}/documents?${params}`)).json();
    state.offset = offset;
    state.total = page.total;
    showResults(page);
    setStatus("");
  } catch (error) {
    $("results").replaceChildren();
    $("total").textContent = "";
    setStatus(error.message, true);
  }
}

function showResults(page) {
  $("total").textContent = page.total === 0 ? "Aucun document." :
    `${page.total} document(s) — ${page.offset + 1} à ${page.offset + page.hits.length}`;
  const items = page.hits.map((hit) => {
    const li = el("li", "result");
    li.dataset.docId = hit.doc_id;
    li.appendChild(el("div", "title", hit.title));
    li.appendChild(el("div", "meta", `${CLASSES[hit.doc_class] || hit.doc_class} · ${hit.date || "sans date"}`));
    if (hit.snippet) li.appendChild(snippetNode(hit.snippet));
    const open = el("button", "open", "Ouvrir");
    open.type = "button";
    open.addEventListener("click", () => openDocument(hit.doc_id));
    const download = el("button", "download", "Télécharger");
    download.type = "button";
    download.addEventListener("click", () => downloadDocument(hit.doc_id, li));
    li.append(open, download);
    return li;
  });
  $("results").replaceChildren(...items);
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PAGE >= state.total;
}

async function openDocument(docId) {
  try {
    const doc = await (await api(`/patients/${encodeURIComponent(patientId())}/documents/${encodeURIComponent(docId)}`)).json();
    $("doc-title").textContent = doc.title;
    const by = doc.author_name ? ` · ${doc.author_name}` : "";
    $("doc-meta").textContent = `${CLASSES[doc.doc_class] || doc.doc_class} · ${doc.document_date || "sans date"} · ${doc.producer}${by}`;
    $("doc-text").textContent = doc.text;
    $("doc").dataset.docId = doc.doc_id;
    $("doc").hidden = false;
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function downloadDocument(docId, item) {
  try {
    const response = await api(`/patients/${encodeURIComponent(patientId())}/documents/${encodeURIComponent(docId)}/file`);
    const blob = await response.blob();
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = match ? match[1] : docId;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    item.dataset.downloadedBytes = String(blob.size);
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function showHistory() {
  try {
    const entries = await (await api(`/patients/${encodeURIComponent(patientId())}/history`)).json();
    const rows = entries.map((e) => {
      const tr = el("tr");
      tr.dataset.action = e.action;
      const when = new Date(e.at).toLocaleString("fr-FR");
      const who = e.actor_name ? `${e.actor_name} (${e.actor})` : e.actor;
      for (const text of [when, who, e.role, ACTIONS[e.action] || e.action, e.doc_ids.length || "", e.reason || ""]) {
        tr.appendChild(el("td", null, String(text)));
      }
      return tr;
    });
    $("history-rows").replaceChildren(...rows);
    $("history").hidden = false;
  } catch (error) {
    setStatus(error.message, true);
  }
}

// Adding a document: the answer is the acknowledgement a producer gets (status, reasons).
async function uploadDocument() {
  const file = $("upload-file").files[0];
  if (!file) {
    setStatus("Choisissez un fichier.", true);
    return;
  }
  const body = new FormData();
  body.append("file", file);
  setStatus("Envoi et lecture du document…");
  try {
    const path = `/patients/${encodeURIComponent(patientId())}/documents`;
    const entry = (await (await api(path, { method: "POST", body })).json()).files[0];
    const reasons = entry.reasons.filter((r) => r.blocking).map((r) => r.message).join(" ; ");
    $("upload-result").textContent = `${file.name} : ${entry.status_text}${reasons ? ` — ${reasons}` : ""}`;
    $("upload-result").dataset.status = entry.status;
    $("upload-file").value = "";
    setStatus("");
    await search(0);
  } catch (error) {
    setStatus(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("connect").addEventListener("click", () => connect($("token").value));
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") connect($("token").value); });
  $("search").addEventListener("click", () => search(0));
  $("q").addEventListener("keydown", (e) => { if (e.key === "Enter") search(0); });
  $("prev").addEventListener("click", () => search(Math.max(0, state.offset - PAGE)));
  $("next").addEventListener("click", () => search(state.offset + PAGE));
  $("show-history").addEventListener("click", showHistory);
  $("upload").addEventListener("click", uploadDocument);
  // Demo convenience: ?token=… logs in, then the token leaves the address bar and history.
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    connect(token);
  }
});
