// Client actions from the agent: size, JSON, envelope, policy and payload checks, once per id.
//
// The agent suggests; the app decides. A message is executed only when it is at most 8 KiB of
// UTF-8 JSON, has exactly the envelope {type:"client_action", v:1, id, action, payload}, names an
// action this app knows AND the token response's client_policy allows, and its payload matches the
// action's schema (the same limits the agent enforces in voice_agent/agent/client_messages.py).
// open_url must be https, without credentials, on a host the policy lists. Each id is handled once.
// Pure functions and a small class: no DOM, no SDK, so node's test runner checks them directly.

import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION } from "./protocol.js";

export const KNOWN_ACTIONS = ["open_url", "show_checklist", "request_confirm"];
export const DEFAULT_CONFIRM_TIMEOUT_S = 30;
const ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const HOST_LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const HOST_RE = new RegExp(`^(\\*\\.)?(${HOST_LABEL}\\.)*${HOST_LABEL}$`);
const ENVELOPE_KEYS = ["action", "id", "payload", "type", "v"];
const MAX_SEEN_IDS = 1000;

/** The policy from the token response; anything missing or malformed allows nothing. */
export function normalizePolicy(raw) {
  const policy = { actions: new Set(), urlHosts: [] };
  if (!isPlainObject(raw)) return policy;
  if (Array.isArray(raw.actions)) {
    for (const name of raw.actions) {
      if (KNOWN_ACTIONS.includes(name)) policy.actions.add(name);
    }
  }
  if (Array.isArray(raw.url_hosts)) {
    for (const host of raw.url_hosts) {
      if (typeof host === "string" && HOST_RE.test(host.toLowerCase())) {
        policy.urlHosts.push(host.toLowerCase());
      }
    }
  }
  return policy;
}

/** Whether `host` is listed exactly, or sits under a `*.domain` entry (not the domain itself). */
export function hostAllowed(policy, host) {
  const name = host.toLowerCase().replace(/\.$/, "");
  return policy.urlHosts.some((entry) =>
    entry.startsWith("*.") ? name.endsWith(entry.slice(1)) && name !== entry.slice(2) : name === entry,
  );
}

/**
 * Check one data packet (a Uint8Array) against the protocol and the policy.
 * Returns {ok:true, id, action, payload} or {ok:false, id, action, reason}; `id` is null unless
 * the message carried a well-formed one (only then can the app answer it).
 */
export function checkClientAction(bytes, policy) {
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    return reject(null, null, `message is ${bytes.byteLength} bytes; the limit is ${MAX_MESSAGE_BYTES}`);
  }
  let message;
  try {
    message = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return reject(null, null, "message is not UTF-8 JSON");
  }
  if (!isPlainObject(message)) return reject(null, null, "message is not a JSON object");
  const id = typeof message.id === "string" && ID_RE.test(message.id) ? message.id : null;
  const action = typeof message.action === "string" ? message.action.slice(0, 64) : null;
  if (message.type !== "client_action") return reject(id, action, "type must be client_action");
  if (message.v !== PROTOCOL_VERSION) return reject(id, action, `unsupported version ${String(message.v).slice(0, 16)}`);
  if (id === null) return reject(null, action, "id is missing or malformed");
  const extra = Object.keys(message).filter((k) => !ENVELOPE_KEYS.includes(k));
  if (extra.length) return reject(id, action, `unexpected field ${extra[0].slice(0, 64)}`);
  if (action === null || !KNOWN_ACTIONS.includes(action)) return reject(id, action, "unknown action");
  if (!policy.actions.has(action)) return reject(id, action, `action ${action} is not allowed here`);
  if (!isPlainObject(message.payload)) return reject(id, action, "payload must be an object");
  const problem = PAYLOAD_CHECKS[action](message.payload, policy);
  if (problem) return reject(id, action, problem);
  return { ok: true, id, action, payload: normalizePayload(action, message.payload) };
}

/** Remembers handled ids so each client action runs at most once (a bounded memory). */
export class SeenIds {
  constructor(limit = MAX_SEEN_IDS) {
    this._limit = limit;
    this._ids = new Set();
  }

  /** True the first time `id` is offered, false after. */
  firstTime(id) {
    if (this._ids.has(id)) return false;
    this._ids.add(id);
    if (this._ids.size > this._limit) this._ids.delete(this._ids.values().next().value);
    return true;
  }
}

const PAYLOAD_CHECKS = {
  open_url(payload, policy) {
    return (
      onlyKeys(payload, ["url", "label"]) ||
      text(payload.url, "url", 8, 2048) ||
      (payload.label != null && text(payload.label, "label", 0, 120)) ||
      checkUrl(payload.url, policy)
    );
  },
  show_checklist(payload) {
    if (!Array.isArray(payload.items) || payload.items.length < 1 || payload.items.length > 20) {
      return "items must be a list of 1 to 20 entries";
    }
    return (
      onlyKeys(payload, ["title", "items"]) ||
      text(payload.title, "title", 1, 120) ||
      payload.items.map((item, n) => text(item, `items.${n}`, 1, 200)).find(Boolean) ||
      null
    );
  },
  request_confirm(payload) {
    const timeout = payload.timeout_s;
    if (timeout != null && !(typeof timeout === "number" && timeout > 0 && timeout <= 300)) {
      return "timeout_s must be a number of seconds in (0, 300]";
    }
    return (
      onlyKeys(payload, ["prompt", "tool", "timeout_s"]) ||
      text(payload.prompt, "prompt", 1, 300) ||
      (payload.tool != null && text(payload.tool, "tool", 1, 64)) ||
      (payload.prompt.trim() === "" && "prompt must not be blank") ||
      null
    );
  },
};

function checkUrl(raw, policy) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return "url is not a valid URL";
  }
  if (url.protocol !== "https:") return "open_url needs an https URL";
  if (url.username || url.password) return "url must not carry credentials";
  if (!hostAllowed(policy, url.hostname)) return `host ${url.hostname} is not allowed`;
  return null;
}

function normalizePayload(action, payload) {
  if (action === "open_url") {
    return { url: new URL(payload.url).href, label: payload.label || null };
  }
  if (action === "show_checklist") return { title: payload.title, items: [...payload.items] };
  return {
    prompt: payload.prompt.split(/\s+/).filter(Boolean).join(" "),
    tool: payload.tool ?? null,
    timeoutS: payload.timeout_s ?? DEFAULT_CONFIRM_TIMEOUT_S,
  };
}

function onlyKeys(object, allowed) {
  const extra = Object.keys(object).find((k) => !allowed.includes(k));
  return extra === undefined ? null : `unexpected payload field ${extra.slice(0, 64)}`;
}

function text(value, name, min, max) {
  if (typeof value !== "string") return `${name} must be a string`;
  if (value.length < min || value.length > max) return `${name} must be ${min} to ${max} characters`;
  return null;
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function reject(id, action, reason) {
  return { ok: false, id, action, reason };
}
