// The staff reports page: sign in with the staff token, list calls, read one call's report.
// Plain DOM, no framework. Data is only ever inserted as text (never as HTML). The token lives
// in sessionStorage for this tab and goes out only in the Authorization header.

import { drawLatencyChart, latencyLegend, latencyTable } from "./reports-chart.js";

const TOKEN_KEY = "voice-agent.staff-token";
const PAGE_SIZE = 25;

const STATUS = { queued: "Queued", processing: "Processing", done: "Done", dead: "Failed" };
const RESOLUTION = {
  resolved: "Resolved",
  unresolved: "Unresolved",
  escalated: "Escalated",
  follow_up_needed: "Follow-up needed",
};
const SENTIMENT = { positive: "Positive", neutral: "Neutral", negative: "Negative" };
const REVIEW_REASON = {
  fallback: "Fallback report: the model's output failed validation",
  low_confidence: "The model was not confident in this report",
  partial_record: "The call record is partial (the agent did not end the call cleanly)",
};
const OWNER = {
  agent: "Agent",
  support: "Support",
  customer: "Customer",
  engineering: "Engineering",
  unknown: "Unassigned",
};

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  filters: {},
  cursors: [null], // the cursor of each page visited; the last one is the current page
  lastOpened: null,
};

// ---- small DOM helpers -------------------------------------------------------------------

/** Create an element: h("p", {class: "x", text: "hi"}, child, "text", ...). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function badge(kind, value, label) {
  return h("span", { class: `badge ${kind}-${value}` }, label ?? value);
}

function say(message) {
  $("status").textContent = message;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const stampFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit",
});

function when(iso) {
  return h("time", { datetime: iso }, dateFormat.format(new Date(iso)));
}

function duration(seconds) {
  if (seconds == null) return "—";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function offset(at, start) {
  return duration(Math.max(0, at - start));
}

function number(value, digits = 0) {
  return Number(value ?? 0).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function words(value) {
  return String(value).replaceAll("_", " ");
}

function jsonText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// ---- API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const detail = body?.detail;
    const text = typeof detail === "string" ? detail : detail?.message ?? "";
    super(body ? `${body.error}${text ? `: ${text}` : ""}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", token = state.token } = {}) {
  const resp = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "same-origin",
  });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

/** Handle an API failure: 401 signs out, anything else is shown where `target` says. */
function failed(error, target) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("Your staff token was not accepted any more. Sign in again.");
    return;
  }
  target.textContent = error instanceof ApiError ? error.message : `Network error: ${error.message}`;
}

// ---- sign-in ----------------------------------------------------------------------------

function showOnly(id) {
  for (const view of ["sign-in", "list-view", "detail-view"]) $(view).hidden = view !== id;
  $("signed-in").hidden = id === "sign-in";
}

function signOut(message = "") {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showOnly("sign-in");
  $("sign-in-error").textContent = message;
  $("token-input").value = "";
  $("token-input").focus();
  say("");
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  const error = $("sign-in-error");
  error.textContent = "";
  if (!token) {
    error.textContent = "Enter the staff token.";
    return;
  }
  say("Checking the token…");
  try {
    await api("/api/calls?limit=1", { token });
  } catch (e) {
    say("");
    if (e instanceof ApiError && e.status === 401) error.textContent = "That token was not accepted.";
    else if (e instanceof ApiError && e.status === 403) error.textContent = "That token lacks the staff role.";
    else error.textContent = e instanceof ApiError ? e.message : `Network error: ${e.message}`;
    return;
  }
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  route();
}

// ---- list -------------------------------------------------------------------------------

function readFilters() {
  const form = $("filters");
  const filters = {};
  const q = form.q.value.trim();
  if (q) filters.q = q;
  if (form.status.value) filters.status = form.status.value;
  if (form.needs_review.value) filters.needs_review = form.needs_review.value;
  // Dates are the staff member's local days, sent as UTC instants.
  if (form.since.value) filters.since = new Date(`${form.since.value}T00:00:00`).toISOString();
  if (form.until.value) {
    const end = new Date(`${form.until.value}T00:00:00`);
    end.setDate(end.getDate() + 1);
    filters.until = end.toISOString();
  }
  return filters;
}

function listUrl() {
  const params = new URLSearchParams({ ...state.filters, limit: String(PAGE_SIZE) });
  const cursor = state.cursors.at(-1);
  if (cursor) params.set("cursor", cursor);
  return `/api/calls?${params}`;
}

function callRow(call) {
  const link = h("a", { href: `#call=${encodeURIComponent(call.call_id)}`, class: "call-link" },
    call.call_id);
  const status = h("div", { class: "badges" },
    badge("status", call.status, STATUS[call.status] ?? call.status),
    call.needs_review ? badge("review", "yes", "Needs review") : null);
  const outcome = h("div", { class: "badges" },
    call.resolution_status ? badge("resolution", call.resolution_status,
      RESOLUTION[call.resolution_status] ?? words(call.resolution_status)) : null,
    call.sentiment ? badge("sentiment", call.sentiment, SENTIMENT[call.sentiment] ?? call.sentiment)
      : null);
  return h("tr", { "data-call-id": call.call_id },
    h("td", { "data-label": "Started" }, when(call.started_at)),
    h("td", { "data-label": "Call" }, link,
      call.user_id ? h("span", { class: "sub" }, call.user_id) : null),
    h("td", { "data-label": "Status" }, status),
    h("td", { "data-label": "Summary", class: "summary-cell" },
      call.summary ?? h("span", { class: "muted" }, "No report yet")),
    h("td", { "data-label": "Outcome" }, outcome),
    h("td", { "data-label": "Length", class: "num" }, duration(call.duration_s),
      h("span", { class: "sub" }, `${call.turns} turns`)));
}

async function loadList() {
  const rows = $("calls-rows");
  const error = $("list-error");
  error.textContent = "";
  $("list-view").setAttribute("aria-busy", "true");
  say("Loading calls…");
  let page;
  try {
    page = await api(listUrl());
  } catch (e) {
    $("list-view").removeAttribute("aria-busy");
    say("");
    failed(e, error);
    return;
  }
  rows.replaceChildren(...page.items.map(callRow));
  $("calls-empty").hidden = page.items.length > 0;
  $("calls-table").hidden = page.items.length === 0;
  state.nextCursor = page.next_cursor;
  const pageNo = state.cursors.length;
  $("page-newer").disabled = pageNo === 1;
  $("page-older").disabled = !page.next_cursor;
  $("page-info").textContent = `Page ${pageNo}`;
  $("list-view").removeAttribute("aria-busy");
  say(`${page.items.length} call${page.items.length === 1 ? "" : "s"} on page ${pageNo}.`);
}

function applyFilters(event) {
  event.preventDefault();
  state.filters = readFilters();
  state.cursors = [null];
  loadList();
}

function clearFilters() {
  // The reset event fires before the form is cleared; read it on the next tick.
  setTimeout(() => {
    state.filters = {};
    state.cursors = [null];
    loadList();
  });
}

// ---- detail -----------------------------------------------------------------------------

function section(title, id, ...content) {
  return h("section", { class: "panel", "aria-labelledby": id },
    h("h3", { id }, title), ...content);
}

function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function table(caption, headers, rows, className = "") {
  return h("div", { class: "table-wrap" },
    h("table", { class: `data-table ${className}` },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((cells) =>
        h("tr", {}, cells.map((cell, i) => h("td", { "data-label": headers[i] }, cell)))))));
}

function deadBanner(call) {
  const result = h("p", { class: "retry-result", role: "status" });
  const button = h("button", { type: "button", class: "button primary", id: "retry-button" },
    "Retry");
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.textContent = "Asking the post-call worker to try again…";
    try {
      await api(`/api/calls/${encodeURIComponent(call.call_id)}/retry`, { method: "POST" });
      result.textContent = "Queued again. This page refreshes in a moment.";
      setTimeout(() => showDetail(call.call_id, { keepFocus: true }), 1500);
    } catch (e) {
      button.disabled = false;
      failed(e, result);
      if (result.textContent) result.textContent = `Retry refused — ${result.textContent}`;
    }
  });
  return h("div", { class: "alert alert-dead", role: "alert" },
    h("h3", {}, "Post-call processing failed"),
    h("p", {}, `After ${call.attempts} attempt${call.attempts === 1 ? "" : "s"} the job was set aside.`),
    call.last_error ? h("pre", { class: "error-text" }, call.last_error) : null,
    h("div", { class: "alert-actions" }, button, result));
}

function integrationList(call) {
  if (!call.integrations.length) return h("p", { class: "muted" }, "No integration has run yet.");
  return h("ul", { class: "integrations" }, call.integrations.map((r) =>
    h("li", {},
      h("div", { class: "integration-head" },
        h("strong", {}, words(r.name)),
        r.ok ? badge("ok", "yes", "Done") : badge("ok", "no", "Failed"),
        h("span", { class: "muted small" }, timeFormat.format(new Date(r.at * 1000)))),
      r.error ? h("p", { class: "error-text small" }, r.error) : null,
      Object.keys(r.result).length
        ? h("p", { class: "small" },
          Object.entries(r.result).map(([k, v]) => `${words(k)}: ${jsonText(v)}`).join(", "))
        : null,
      h("p", { class: "muted small" }, "Key ", h("code", {}, r.idempotency_key)))));
}

const NO_REPORT = {
  queued: "No report yet: the call is waiting for the post-call worker.",
  processing: "No report yet: the post-call worker is writing it.",
  done: "No report was stored for this call.",
  dead: "No report: post-call processing failed (see above).",
};

function reportSections(call) {
  const stored = call.report;
  if (!stored) {
    return {
      summary: section("Report", "s-report",
        h("p", { class: "muted" }, NO_REPORT[call.status] ?? "No report yet.")),
      ticket: section("Ticket", "s-ticket", h("p", { class: "muted" }, "No ticket fields yet."),
        h("h4", {}, "Integrations"), integrationList(call)),
    };
  }
  const report = stored.report;
  const badges = h("div", { class: "badges" },
    badge("resolution", report.resolution_status,
      RESOLUTION[report.resolution_status] ?? words(report.resolution_status)),
    badge("sentiment", report.sentiment, `Sentiment: ${SENTIMENT[report.sentiment] ?? report.sentiment}`),
    h("span", { class: "badge neutral" }, `Confidence ${Math.round(report.confidence * 100)}%`),
    stored.needs_review ? badge("review", "yes", "Needs review") : null);
  const reasons = stored.needs_review && stored.review_reasons.length
    ? h("div", { class: "review-box" },
      h("h4", {}, "Why it needs review"),
      h("ul", {}, stored.review_reasons.map((r) => h("li", {}, REVIEW_REASON[r] ?? words(r)))))
    : null;
  const summary = section("Summary", "s-summary", badges,
    h("p", { class: "summary-text" }, report.summary), reasons,
    h("p", { class: "muted small" },
      stored.model ? `Written by ${stored.model} in ${stored.attempts} attempt${stored.attempts === 1 ? "" : "s"}.`
        : "Deterministic fallback report (no model output was usable)."));

  const actions = section("Action items", "s-actions",
    report.action_items.length
      ? h("ul", { class: "action-items" }, report.action_items.map((item) =>
        h("li", {}, h("span", { class: `owner owner-${item.owner}` }, OWNER[item.owner] ?? item.owner),
          h("span", {}, item.text))))
      : h("p", { class: "muted" }, "None."));

  const body = h("pre", { class: "email-body", id: "email-body" }, report.email_draft.body);
  const copyStatus = h("span", { class: "copy-status", role: "status" });
  const copy = h("button", { type: "button", class: "button", id: "copy-email" }, "Copy draft");
  copy.addEventListener("click", () => copyDraft(report.email_draft, copyStatus));
  const email = section("Follow-up email", "s-email",
    h("p", { class: "draft-flag" }, h("strong", {}, "Draft — not sent."),
      " Review it, then send it yourself from your mail client."),
    h("div", { class: "email" },
      h("p", { class: "email-subject" }, h("span", { class: "muted" }, "Subject: "),
        report.email_draft.subject),
      body),
    h("div", { class: "row" }, copy, copyStatus));

  const ticket = section("Ticket", "s-ticket",
    facts([
      ["Title", report.ticket.title],
      ["Priority", badge("priority", report.ticket.priority, report.ticket.priority)],
      ["Category", report.ticket.category],
    ]),
    h("p", { class: "ticket-description" }, report.ticket.description),
    h("h4", {}, "Integrations"), integrationList(call));
  return { summary, actions, email, ticket };
}

async function copyDraft(draft, status) {
  const text = `Subject: ${draft.subject}\n\n${draft.body}`;
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied.";
  } catch {
    const selection = window.getSelection();
    const range = document.createRange();
    range.selectNodeContents($("email-body"));
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Copying is blocked here; the draft is selected, press Ctrl+C.";
  }
}

function transcriptSection(record) {
  const turns = record.transcript;
  return section("Transcript", "s-transcript",
    turns.length
      ? h("ol", { class: "transcript" }, turns.map((turn) =>
        h("li", { class: `turn turn-${turn.speaker}${turn.interrupted ? " interrupted" : ""}` },
          h("div", { class: "turn-meta" },
            h("span", { class: "speaker" }, turn.speaker === "user" ? "Caller" : "Agent"),
            h("span", { class: "muted" }, offset(turn.started_at, record.started_at)),
            turn.kind !== "user" && turn.kind !== "reply" ? h("span", { class: "tag" }, turn.kind) : null,
            turn.interrupted ? h("span", { class: "tag tag-interrupted" }, "interrupted") : null),
          h("p", { class: "turn-text" }, turn.text))))
      : h("p", { class: "muted" }, "Nothing was said."));
}

function latencySection(record) {
  const metrics = record.metrics;
  if (!metrics.length) {
    return section("Latency per turn", "s-latency", h("p", { class: "muted" }, "No agent turn was measured."));
  }
  const host = h("div", { class: "chart", id: "latency-chart" });
  let drawnWidth = 0;
  const draw = () => {
    const width = host.clientWidth;
    if (width && width !== drawnWidth) {
      drawnWidth = width;
      drawLatencyChart(host, metrics);
    }
  };
  new ResizeObserver(() => requestAnimationFrame(draw)).observe(host);
  return section("Latency per turn", "s-latency",
    h("p", { class: "muted small" },
      "From the end of the caller's speech to the agent's first audio, split by stage."),
    latencyLegend(), host,
    h("details", { class: "latency-details" }, h("summary", {}, "Latency table"), latencyTable(metrics)));
}

function toolSection(record) {
  return section("Tool calls", "s-tools",
    record.tool_audit.length
      ? table("Tool audit", ["Time", "Tool", "Outcome", "Confirmation", "Duration", "Arguments / error"],
        record.tool_audit.map((t) => [
          offset(t.at, record.started_at),
          h("code", {}, t.tool),
          badge("outcome", t.outcome, words(t.outcome)),
          words(t.confirmation),
          t.duration_ms == null ? "—" : `${number(t.duration_ms)} ms`,
          t.error ? h("span", { class: "error-text" }, t.error) : h("code", { class: "args" }, jsonText(t.arguments)),
        ]), "tool-audit")
      : h("p", { class: "muted" }, "No tool was called."));
}

function clientActionSection(record) {
  return section("Client actions", "s-client",
    record.client_action_audit.length
      ? table("Client action audit", ["Time", "Direction", "Type", "Action", "Outcome", "Detail"],
        record.client_action_audit.map((a) => [
          offset(a.at, record.started_at),
          a.direction === "to_app" ? "Agent → app" : "App → agent",
          words(a.type),
          a.action ? h("code", {}, a.action) : "—",
          badge("outcome", a.outcome, a.outcome),
          a.detail ?? "",
        ]))
      : h("p", { class: "muted" }, "No client action was exchanged."));
}

function usageSection(record) {
  const u = record.usage;
  return section("Usage", "s-usage", facts([
    ["Speech to text", `${number(u.stt_audio_s, 1)} s of audio`],
    ["Text to speech", `${number(u.tts_audio_s, 1)} s of audio`],
    ["LLM requests", number(u.llm_requests)],
    ["LLM tokens", `${number(u.llm_prompt_tokens)} prompt · ${number(u.llm_completion_tokens)} completion`],
    ["Speculative replies", `${number(u.speculations ?? 0)} (${number(u.speculations_wasted ?? 0)} wasted)`],
  ]));
}

function historySection(call) {
  return section("Job history", "s-history",
    call.job_history.length
      ? table("Post-call job history", ["At", "Event", "Detail"],
        call.job_history.map((e) => [
          h("time", { datetime: new Date(e.at * 1000).toISOString() },
            stampFormat.format(new Date(e.at * 1000))),
          h("code", {}, e.event),
          Object.entries(e.detail).map(([k, v]) => `${words(k)}: ${jsonText(v)}`).join(", "),
        ]))
      : h("p", { class: "muted" }, "No post-call job has run yet."));
}

// What the store says about the app's claim that a call continues an earlier one.
const CLAIM_CHECK = {
  same_caller: "verified: an earlier call of the same caller",
  unknown_call: "not verified: no such call is stored",
  other_caller: "not verified: that call is not this caller's",
  not_earlier: "not verified: that call did not start earlier",
  same_call: "not verified: it names this call",
};

function reconnectClaims(claims) {
  if (!claims?.length) return null;
  // Only a verified claim becomes a link; an unverified one stays the app's word.
  return h("ul", { class: "claims" }, claims.map((c) => h("li", { "data-verified": String(c.verified) },
    c.verified
      ? h("a", { href: `#call=${encodeURIComponent(c.claimed_call_id)}` }, c.claimed_room)
      : h("code", {}, c.claimed_room),
    ` — claimed by the caller's app; ${CLAIM_CHECK[c.check] ?? words(c.check)}`)));
}

function renderDetail(call) {
  const record = call.record;
  const header = h("header", { class: "detail-header" },
    h("h2", { id: "detail-heading", tabindex: "-1" }, "Call ", h("code", {}, call.call_id)),
    h("div", { class: "badges" },
      badge("status", call.status, STATUS[call.status] ?? call.status),
      call.needs_review ? badge("review", "yes", "Needs review") : null,
      record.complete ? null : h("span", { class: "badge neutral" }, "Partial record")),
    facts([
      ["Started", when(call.started_at)],
      ["Length", call.duration_s == null ? "—" : `${duration(call.duration_s)} min`],
      ["Caller", call.user_id ?? "anonymous"],
      ["Ended because", record.end_reason ? words(record.end_reason) : "—"],
      ["Post-call attempts", String(call.attempts)],
      ["Reconnect of", reconnectClaims(call.reconnect_claims)],
    ]));
  const report = reportSections(call);
  const main = h("div", { class: "detail-main" },
    report.summary, report.actions, report.email, transcriptSection(record));
  const side = h("div", { class: "detail-side" },
    report.ticket, usageSection(record), historySection(call));
  const parts = [header];
  if (call.status === "dead") parts.push(deadBanner(call));
  parts.push(h("div", { class: "detail-grid" }, main, side),
    latencySection(record), toolSection(record), clientActionSection(record));
  $("detail").replaceChildren(...parts);
}

async function showDetail(callId, { keepFocus = false } = {}) {
  showOnly("detail-view");
  state.lastOpened = callId;
  say("Loading the call…");
  let call;
  try {
    call = await api(`/api/calls/${encodeURIComponent(callId)}`);
  } catch (e) {
    say("");
    const target = h("p", { class: "form-error", role: "alert" });
    $("detail").replaceChildren(target);
    failed(e, target);
    return;
  }
  renderDetail(call);
  document.title = `Call ${call.call_id} · Call reports`;
  say(`Call ${call.call_id} loaded.`);
  if (!keepFocus) $("detail-heading").focus();
}

function showList() {
  showOnly("list-view");
  document.title = "Call reports · Voice agent";
  loadList().then(() => {
    const opened = state.lastOpened &&
      document.querySelector(`tr[data-call-id="${CSS.escape(state.lastOpened)}"] a`);
    if (opened) opened.focus();
    state.lastOpened = null;
  });
}

// ---- routing ----------------------------------------------------------------------------

function route() {
  if (!state.token) {
    signOut();
    return;
  }
  const match = /^#call=(.+)$/.exec(location.hash);
  if (match) showDetail(decodeURIComponent(match[1]));
  else showList();
}

function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => {
    history.replaceState(null, "", location.pathname);
    signOut("Signed out.");
  });
  $("filters").addEventListener("submit", applyFilters);
  $("filters").addEventListener("reset", clearFilters);
  $("page-older").addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    loadList();
  });
  $("page-newer").addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    loadList();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
