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
const ROLES = {
  patient: "patient", professional: "professionnel de santé", caregiver: "aidant",
  representative: "représentant légal",
};
// Why an access happened (the access decision) or what a change was, as the history says it.
const MOTIFS = {
  owner: "mon propre accès", authorisation: "accès autorisé", break_glass: "accès en urgence",
  delegation: "délégation", representative: "représentant légal", blocked: "bloqué",
  not_authorised: "non autorisé", not_own_record: "dossier d'un autre patient",
  not_representative: "non représentant", release_needs_professional: "réservé aux professionnels",
  "hide from professionals": "masqué aux professionnels", unhide: "de nouveau visible",
  "released to the patient": "rendu visible au patient",
};
// HL7 table 0078 abnormal flags: what the patient reads beside a result.
const FLAGS = {
  H: "élevé", HH: "très élevé", L: "bas", LL: "très bas", A: "anormal", AA: "très anormal",
  N: "normal", ">": "au-dessus du seuil", "<": "en dessous du seuil",
};
const ABNORMAL = new Set(["H", "HH", "L", "LL", "A", "AA", ">", "<"]);
const PAGE = 10;
const state = { token: null, me: null, offset: 0, total: 0 };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

class SessionExpired extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${state.token}` },
  });
  if (response.status === 401 && state.me) {
    // The token expired (or was revoked) while the page was open: back to the login screen.
    logout("Votre session a expiré. Reconnectez-vous avec un nouveau jeton d'accès.");
    throw new SessionExpired("session expirée");
  }
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

// The words that matched come as offsets into the snippet: the snippet itself is plain text,
// whatever brackets or marks the document holds.
function snippetNode(snippet, highlights) {
  const p = el("p", "snippet");
  let cursor = 0;
  for (const [start, end] of highlights || []) {
    if (start < cursor || end > snippet.length) continue;
    if (start > cursor) p.appendChild(document.createTextNode(snippet.slice(cursor, start)));
    p.appendChild(el("mark", null, snippet.slice(start, end)));
    cursor = end;
  }
  if (cursor < snippet.length) p.appendChild(document.createTextNode(snippet.slice(cursor)));
  return p;
}

function frenchDate(iso) {
  if (!iso) return "sans date";
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(y, m - 1, d).toLocaleDateString("fr-FR", { day: "numeric", month: "long", year: "numeric" });
}

function logout(message) {
  state.token = null;
  state.me = null;
  closeDocument(false);
  $("results").replaceChildren();
  $("total").textContent = "";
  $("history-rows").replaceChildren();
  $("history").hidden = true;
  $("main").hidden = true;
  $("login").hidden = false;
  $("token").value = "";
  $("who").textContent = "Non connecté";
  setStatus(message, true);
  $("token").focus();
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
  $("who").textContent = `Connecté : ${who} (${ROLES[state.me.role] || state.me.role})`;
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
    if (error instanceof SessionExpired) return;
    $("results").replaceChildren();
    $("total").textContent = "";
    setStatus(error.message, true);
  }
}

function showResults(page) {
  closeDocument(false);  // a new search clears what was open
  $("total").textContent = page.total === 0 ? "Aucun document." :
    `${page.total} document(s) — ${page.offset + 1} à ${page.offset + page.hits.length}`;
  const items = page.hits.map((hit) => {
    const li = el("li", "result");
    li.dataset.docId = hit.doc_id;
    const when = frenchDate(hit.date);
    li.appendChild(el("div", "title", hit.title));
    li.appendChild(el("div", "meta", `${CLASSES[hit.doc_class] || hit.doc_class} · ${when}`));
    if (hit.snippet) li.appendChild(snippetNode(hit.snippet, hit.highlights));
    const named = `« ${hit.title} » du ${when}`;
    const open = el("button", "open", "Ouvrir");
    open.type = "button";
    open.setAttribute("aria-label", `Ouvrir ${named}`);
    open.setAttribute("aria-expanded", "false");
    open.addEventListener("click", () => openDocument(hit.doc_id, li, open));
    const download = el("button", "download", "Télécharger");
    download.type = "button";
    download.setAttribute("aria-label", `Télécharger ${named}`);
    download.addEventListener("click", () => downloadDocument(hit.doc_id, li));
    li.append(open, download);
    return li;
  });
  $("results").replaceChildren(...items);
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PAGE >= state.total;
}

function resultRows(results) {
  return results.map((r) => {
    const tr = el("tr");
    const flag = (r.abnormal_flag || "").toUpperCase();
    if (ABNORMAL.has(flag)) tr.className = "abnormal";
    tr.appendChild(el("td", null, r.analyte));
    const value = el("td");
    if (ABNORMAL.has(flag)) value.appendChild(el("strong", null, r.value ?? ""));
    else value.textContent = r.value ?? "";
    tr.appendChild(value);
    tr.appendChild(el("td", null, r.unit || ""));
    tr.appendChild(el("td", null, r.reference_range || ""));
    const interpretation = el("td", "flag", flag ? (FLAGS[flag] || flag) : "");
    tr.appendChild(interpretation);
    return tr;
  });
}

let opener = null;  // the button that opened the document: focus goes back to it on close

async function openDocument(docId, item, button) {
  try {
    const doc = await (await api(`/patients/${encodeURIComponent(patientId())}/documents/${encodeURIComponent(docId)}`)).json();
    closeDocument(false);
    $("doc-title").textContent = doc.title;
    const by = doc.author_name ? ` · ${doc.author_name}` : "";
    const from = doc.producer_name || doc.producer;
    $("doc-meta").textContent = `${CLASSES[doc.doc_class] || doc.doc_class} · ${frenchDate(doc.document_date)} · ${from}${by}`;
    const rows = resultRows(doc.results || []);
    $("doc-results-rows").replaceChildren(...rows);
    $("doc-results").hidden = rows.length === 0;
    $("doc-text").textContent = doc.text;
    $("doc").dataset.docId = doc.doc_id;
    item.appendChild($("doc"));  // where the patient is looking, right under the result
    $("doc").hidden = false;
    opener = button;
    button.setAttribute("aria-expanded", "true");
    $("doc-title").focus();
  } catch (error) {
    if (!(error instanceof SessionExpired)) setStatus(error.message, true);
  }
}

function closeDocument(restoreFocus = true) {
  const doc = $("doc");
  doc.hidden = true;
  delete doc.dataset.docId;
  $("doc-results-rows").replaceChildren();
  $("doc-text").textContent = "";
  $("main").appendChild(doc);  // parked outside the list, which a search replaces
  if (opener) {
    opener.setAttribute("aria-expanded", "false");
    if (restoreFocus && opener.isConnected) opener.focus();
  }
  opener = null;
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
    if (!(error instanceof SessionExpired)) setStatus(error.message, true);
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
      const motif = e.reason ? (MOTIFS[e.reason] || e.reason) : "";
      for (const text of [when, who, ROLES[e.role] || e.role, ACTIONS[e.action] || e.action, e.doc_ids.length || "", motif]) {
        tr.appendChild(el("td", null, String(text)));
      }
      return tr;
    });
    $("history-rows").replaceChildren(...rows);
    $("history").hidden = false;
  } catch (error) {
    if (!(error instanceof SessionExpired)) setStatus(error.message, true);
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
  $("doc-close").addEventListener("click", () => closeDocument(true));
  $("doc").addEventListener("keydown", (e) => { if (e.key === "Escape") closeDocument(true); });
  // Demo convenience: ?token=… logs in, then the token leaves the address bar and history.
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    connect(token);
  }
});
