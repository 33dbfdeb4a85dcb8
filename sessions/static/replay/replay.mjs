// The replay page: loads a session's timeline and notes from the API and shows the document,
// its runs and events at the slider's position, playing at 1x, 4x or 16x.
//
// The owner token (for the notes) comes from the URL's fragment (#token=...) or the form, and
// only ever travels in an Authorization header: a fragment never reaches the server, so the
// token is in no request line and no log. Without a token the notes are asked for with the
// browser's cookies, which is how a staff user who came from the admin reads them.
import { changedRanges, Replay, SPEEDS } from "./timeline.mjs";

const PAGE_SIZE = 500;

const root = document.getElementById("replay");
const sessionId = root.dataset.sessionId;
const api = `/api/sessions/${encodeURIComponent(sessionId)}`;
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body, fallback) {
    const detail = body && typeof body === "object" ? body.detail || body.message : null;
    const code = body && typeof body === "object" ? body.error : null;
    super(detail ? `${detail}${code ? ` (${code})` : ""}` : fallback || `The server answered ${status}.`);
    this.status = status;
    this.code = code;
  }
}

async function callApi(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  } else if (method !== "GET") {
    // A staff user's cookie login is CSRF-checked on writes, as the admin's forms are.
    const csrf = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (csrf) {
      headers["X-CSRFToken"] = decodeURIComponent(csrf[1]);
    }
  }
  let response;
  try {
    response = await fetch(`${api}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, null, `The server could not be reached (${error.message}).`);
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // An answer that is not JSON: the status says enough.
  }
  if (!response.ok) {
    throw new ApiError(response.status, answer);
  }
  return answer;
}

// --- Loading ---------------------------------------------------------------------------------

async function loadTimeline() {
  const items = [];
  let first = null;
  let cursor = { after: 0, afterEvent: null };
  for (;;) {
    const query = new URLSearchParams({ after: String(cursor.after), limit: String(PAGE_SIZE) });
    if (cursor.afterEvent !== null && cursor.afterEvent !== undefined) {
      query.set("afterEvent", String(cursor.afterEvent));
    }
    const page = await callApi(`/timeline?${query}`);
    first ??= page;
    items.push(...page.items);
    if (!page.hasMore) {
      return { firstVersion: first.firstVersion, items };
    }
    const next = { after: page.next.after, afterEvent: page.next.afterEvent ?? null };
    if (next.after === cursor.after && next.afterEvent === cursor.afterEvent) {
      throw new Error("The timeline's pages did not advance.");
    }
    cursor = next;
  }
}

async function loadReplay() {
  // The oldest kept version can move on between the two calls (a busy session trims its log):
  // then the code answers 410 VERSION_NOT_KEPT, and the timeline is read again.
  for (let attempt = 1; ; attempt += 1) {
    const { firstVersion, items } = await loadTimeline();
    try {
      const code = await callApi(`/code?version=${firstVersion}`);
      return new Replay({ firstVersion, firstText: code.code, language: code.language, items });
    } catch (error) {
      if (!(error instanceof ApiError && error.code === "VERSION_NOT_KEPT") || attempt >= 3) {
        throw error;
      }
    }
  }
}

// --- Showing a position ---------------------------------------------------------------------

let replay = null;
let position = 0;

function clockOf(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : `${date.toISOString().slice(11, 23)} UTC`;
}

function elapsed(at) {
  const first = replay.items[0];
  const item = replay.itemAt(at);
  if (!first || !item) {
    return "0:00";
  }
  const seconds = Math.max(0, Math.round((Date.parse(item.timestamp) - Date.parse(first.timestamp)) / 1000));
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(seconds % 60).padStart(2, "0")}`;
}

function who(item) {
  return item.userId ? item.userId : "the API";
}

function describe(item) {
  switch (item.type) {
    case "change":
      return `${who(item)} changed the document (version ${item.version})`;
    case "language-change":
      return `Language changed from ${item.from} to ${item.to}`;
    case "title-change":
      return item.description || "Title changed";
    case "save":
      return `Code saved (version ${item.version})`;
    case "run":
      return `Ran ${item.language}: ${item.status}${item.exitCode === null || item.exitCode === undefined ? "" : `, exit ${item.exitCode}`}`;
    default:
      return item.type;
  }
}

function showDocument() {
  const text = replay.textAt(position);
  const change = replay.changeAt(position);
  const documentEl = $("document");
  const fragment = document.createDocumentFragment();
  let pos = 0;
  let first = null;
  for (const range of change ? changedRanges(change.changes) : []) {
    fragment.append(text.slice(pos, range.from));
    const mark = document.createElement(range.to > range.from ? "mark" : "span");
    if (range.to > range.from) {
      mark.className = "changed";
      mark.textContent = text.slice(range.from, range.to);
    } else {
      mark.className = "deleted";
      mark.title = "text deleted here";
    }
    fragment.append(mark);
    first ??= mark;
    pos = range.to;
  }
  fragment.append(text.slice(pos));
  documentEl.replaceChildren(fragment);
  documentEl.dataset.version = String(replay.versionAt(position));
  const lines = text.split("\n").length;
  $("gutter").textContent = Array.from({ length: lines }, (_, i) => i + 1).join("\n");
  first?.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function showRun() {
  const run = replay.runAt(position);
  const panel = $("run");
  panel.replaceChildren();
  if (!run) {
    panel.append(paragraph("No run yet at this point.", "muted"));
    return;
  }
  const summary = paragraph(
    `${run.language} · ${run.status}${run.exitCode === null || run.exitCode === undefined ? "" : ` · exit ${run.exitCode}`}` +
      ` · ${run.executionTime ?? "?"} ms · at ${clockOf(run.timestamp)}`,
    run.success ? "ok" : "failed",
  );
  summary.id = "run-summary";
  panel.append(summary);
  if (run.error) {
    const error = paragraph(run.error, "run-error");
    error.id = "run-error";
    panel.append(error);
  }
  if (run.stdout === null && run.stderr === null) {
    panel.append(paragraph("(output not kept)", "muted"));
  } else {
    for (const stream of ["stdout", "stderr"]) {
      if (run[stream] === null) {
        panel.append(paragraph(`${stream}: (output not kept)`, "muted"));
      } else if (run[stream] !== "" || stream === "stdout") {
        const label = paragraph(stream, "stream");
        const pre = document.createElement("pre");
        pre.id = `run-${stream}`;
        pre.className = `output ${stream}`;
        pre.textContent = run[stream];
        panel.append(label, pre);
      }
    }
  }
  if (run.truncated) {
    panel.append(paragraph("(output truncated by the sandbox)", "muted"));
  }
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) {
    p.className = className;
  }
  return p;
}

function showPosition() {
  const item = replay.itemAt(position);
  $("position").value = String(position);
  $("position").setAttribute("aria-valuetext", `version ${replay.versionAt(position)}`);
  $("version").textContent = `version ${replay.versionAt(position)} of ${replay.lastVersion}`;
  $("language").textContent = replay.languageAt(position);
  $("clock").textContent = `${elapsed(position)} · step ${position} of ${replay.end}`;
  $("moment").textContent = item
    ? `${clockOf(item.timestamp)} · ${describe(item)}`
    : `Start: the document at version ${replay.firstVersion}`;
  showDocument();
  showRun();
  for (const li of $("events").children) {
    const at = Number(li.dataset.position);
    li.classList.toggle("past", at <= position);
    li.classList.toggle("current", at === position);
  }
  root.dataset.position = String(position);
}

function seek(to) {
  position = Math.max(0, Math.min(replay.end, to));
  showPosition();
}

// --- Playback -------------------------------------------------------------------------------

let timer = null;

function speed() {
  const checked = document.querySelector('input[name="speed"]:checked');
  const value = Number(checked?.value);
  return SPEEDS.includes(value) ? value : 1;
}

function playing() {
  return timer !== null;
}

function scheduleNext() {
  const delay = replay.delayAfter(position, speed());
  if (delay === null) {
    pause();
    root.dataset.state = "ended";
    return;
  }
  timer = setTimeout(() => {
    seek(position + 1);
    scheduleNext();
  }, delay);
}

function play() {
  if (position >= replay.end) {
    seek(0);
  }
  root.dataset.state = "playing";
  $("play").textContent = "Pause";
  scheduleNext();
}

function pause() {
  clearTimeout(timer);
  timer = null;
  root.dataset.state = "ready";
  $("play").textContent = "Play";
}

// --- Events list and markers ----------------------------------------------------------------

function buildEvents() {
  const list = $("events");
  const markers = $("markers");
  list.replaceChildren();
  markers.replaceChildren();
  replay.items.forEach((item, index) => {
    if (item.type === "change") {
      return;
    }
    const at = index + 1;
    const li = document.createElement("li");
    li.dataset.position = String(at);
    li.className = `event ${item.type}`;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${clockOf(item.timestamp)} · ${describe(item)}`;
    button.addEventListener("click", () => seek(at));
    li.append(button);
    list.append(li);

    const marker = document.createElement("button");
    marker.type = "button";
    marker.className = `marker ${item.type}`;
    marker.title = describe(item);
    marker.setAttribute("aria-label", describe(item));
    marker.style.setProperty("--at", String(replay.end ? at / replay.end : 0));
    marker.addEventListener("click", () => seek(at));
    markers.append(marker);
  });
  if (!list.children.length) {
    list.append(paragraph("No language changes, saves or runs.", "muted"));
  }
}

// --- Notes ----------------------------------------------------------------------------------

let token = "";

function tokenFromFragment() {
  return new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
}

function notesStatus(text, className = "") {
  const status = $("notes-status");
  status.textContent = text;
  status.className = className;
}

async function loadNotes() {
  const text = $("notes-text");
  text.disabled = true;
  $("notes-save").disabled = true;
  try {
    const notes = await callApi("/notes", { token });
    text.value = notes.notes;
    text.disabled = false;
    $("notes-save").disabled = false;
    $("notes-editor").hidden = false;
    $("token-form").hidden = true;
    notesStatus(notes.updatedAt ? `Last saved ${clockOf(notes.updatedAt)}` : "No notes yet.");
  } catch (error) {
    $("notes-editor").hidden = true;
    $("token-form").hidden = false;
    if (error.status === 401) {
      notesStatus("The notes need the session's owner token.", "muted");
    } else {
      notesStatus(`Could not load the notes: ${error.message}`, "error");
    }
  }
}

async function saveNotes() {
  $("notes-save").disabled = true;
  notesStatus("Saving…");
  try {
    const notes = await callApi("/notes", { method: "PUT", body: { notes: $("notes-text").value }, token });
    notesStatus(`Saved ${clockOf(notes.updatedAt)}`, "ok");
  } catch (error) {
    notesStatus(`Could not save the notes: ${error.message}`, "error");
  } finally {
    $("notes-save").disabled = false;
  }
}

function useToken(value) {
  token = value.trim();
  // Kept in the fragment, so a reload keeps it and it still never reaches the server.
  const path = window.location.pathname;
  history.replaceState(null, "", token ? `${path}#${new URLSearchParams({ token })}` : path);
  loadNotes();
}

// --- Start ----------------------------------------------------------------------------------

function showError(message) {
  const error = $("error");
  error.textContent = message;
  error.hidden = false;
}

function wireControls() {
  $("play").addEventListener("click", () => (playing() ? pause() : play()));
  $("position").addEventListener("input", (event) => seek(Number(event.target.value)));
  $("step-back").addEventListener("click", () => seek(position - 1));
  $("step-forward").addEventListener("click", () => seek(position + 1));
  for (const radio of document.querySelectorAll('input[name="speed"]')) {
    radio.addEventListener("change", () => {
      if (playing()) {
        clearTimeout(timer);
        scheduleNext();
      }
    });
  }
}

function wireNotes() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken($("token-input").value);
    $("token-input").value = "";
  });
  $("notes-save").addEventListener("click", saveNotes);
  window.addEventListener("hashchange", () => {
    const fromFragment = tokenFromFragment();
    if (fromFragment !== token) {
      token = fromFragment;
      loadNotes();
    }
  });
}

async function start() {
  wireNotes();
  token = tokenFromFragment();
  const notes = loadNotes();
  try {
    replay = await loadReplay();
  } catch (error) {
    root.dataset.state = "error";
    $("status").hidden = true;
    showError(`Could not load the session's timeline: ${error.message}`);
    await notes;
    return;
  }
  $("position").max = String(replay.end);
  buildEvents();
  wireControls();
  $("status").hidden = true;
  $("player").hidden = false;
  $("play").disabled = false;
  seek(replay.end);
  await notes;
  root.dataset.state = "ready";
}

start();
