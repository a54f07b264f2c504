// Unit tests of the web client's pure modules, run by node's built-in test runner
// (tests/browser/test_client_units.py runs them inside pytest).

import assert from "node:assert/strict";
import { test } from "node:test";

import { SeenIds, checkClientAction, hostAllowed, normalizePolicy } from "../../../web/src/actions.js";
import { reconnectDelayMs } from "../../../web/src/backoff.js";

const POLICY = normalizePolicy({
  actions: ["open_url", "show_checklist", "request_confirm"],
  url_hosts: ["status.example.com", "*.help.example.org"],
});

function bytes(message) {
  return new TextEncoder().encode(typeof message === "string" ? message : JSON.stringify(message));
}

function action(name, payload, extra = {}) {
  return { type: "client_action", v: 1, id: "act_1", action: name, payload, ...extra };
}

test("a valid open_url passes with its normalized URL", () => {
  const result = checkClientAction(bytes(action("open_url", { url: "https://status.example.com/x", label: "Status" })), POLICY);
  assert.deepEqual(result, { ok: true, id: "act_1", action: "open_url", payload: { url: "https://status.example.com/x", label: "Status" } });
});

test("a missing policy allows nothing", () => {
  const result = checkClientAction(bytes(action("show_checklist", { title: "T", items: ["a"] })), normalizePolicy(undefined));
  assert.equal(result.ok, false);
  assert.match(result.reason, /not allowed/);
});

test("messages over 8 KiB are rejected before parsing", () => {
  const result = checkClientAction(new Uint8Array(8 * 1024 + 1), POLICY);
  assert.deepEqual([result.ok, result.id], [false, null]);
  assert.match(result.reason, /limit is 8192/);
});

const REJECTED = {
  "not JSON": ["{nope", /not UTF-8 JSON/],
  "invalid UTF-8": [new Uint8Array([0x7b, 0xff, 0x7d]), /not UTF-8 JSON/],
  "an array": [[1, 2], /not a JSON object/],
  "wrong type": [action("open_url", {}, { type: "other" }), /type must be client_action/],
  "wrong version": [action("open_url", {}, { v: 2 }), /unsupported version/],
  "a malformed id": [action("open_url", {}, { id: "<b>x</b>" }), /id is missing or malformed/],
  "an extra envelope field": [action("open_url", {}, { html: "<b>" }), /unexpected field html/],
  "an unknown action": [action("run_script", {}), /unknown action/],
  "a payload that is not an object": [action("open_url", "https://x"), /payload must be an object/],
  "http": [action("open_url", { url: "http://status.example.com/" }), /https/],
  "javascript:": [action("open_url", { url: "javascript:alert(1)//x" }), /https/],
  "a host not listed": [action("open_url", { url: "https://evil.example.net/" }), /host evil.example.net is not allowed/],
  "a look-alike host": [action("open_url", { url: "https://status.example.com.evil.net/" }), /not allowed/],
  "credentials in the URL": [action("open_url", { url: "https://u:p@status.example.com/" }), /credentials/],
  "the wildcard's own domain": [action("open_url", { url: "https://help.example.org/" }), /not allowed/],
  "an extra payload field": [action("open_url", { url: "https://status.example.com/", target: "_self" }), /unexpected payload field/],
  "an empty checklist": [action("show_checklist", { title: "T", items: [] }), /1 to 20/],
  "a non-string item": [action("show_checklist", { title: "T", items: [{}] }), /items.0 must be a string/],
  "a long title": [action("show_checklist", { title: "x".repeat(121), items: ["a"] }), /title must be 1 to 120/],
  "a blank prompt": [action("request_confirm", { prompt: "   " }), /blank/],
  "a negative timeout": [action("request_confirm", { prompt: "Go?", timeout_s: -1 }), /timeout_s/],
  "a string timeout": [action("request_confirm", { prompt: "Go?", timeout_s: "9" }), /timeout_s/],
};

for (const [name, [message, reason]] of Object.entries(REJECTED)) {
  test(`rejects ${name}`, () => {
    const raw = message instanceof Uint8Array ? message : bytes(message);
    const result = checkClientAction(raw, POLICY);
    assert.equal(result.ok, false);
    assert.match(result.reason, reason);
  });
}

test("a wildcard entry allows subdomains", () => {
  assert.equal(hostAllowed(POLICY, "a.help.example.org"), true);
  assert.equal(hostAllowed(POLICY, "STATUS.example.com."), true);
  assert.equal(hostAllowed(POLICY, "xhelp.example.org"), false);
});

test("request_confirm gets a default timeout and a one-line prompt", () => {
  const result = checkClientAction(bytes(action("request_confirm", { prompt: "Cancel\n the  order?" })), POLICY);
  assert.deepEqual(result.payload, { prompt: "Cancel the order?", tool: null, timeoutS: 30 });
});

test("malformed policy entries are dropped", () => {
  const policy = normalizePolicy({ actions: ["open_url", "eval", 3], url_hosts: ["ok.example.com", "bad host", null] });
  assert.deepEqual([...policy.actions], ["open_url"]);
  assert.deepEqual(policy.urlHosts, ["ok.example.com"]);
});

test("each id is seen once, within a bounded memory", () => {
  const seen = new SeenIds(2);
  assert.equal(seen.firstTime("a"), true);
  assert.equal(seen.firstTime("a"), false);
  seen.firstTime("b");
  seen.firstTime("c"); // forgets "a"
  assert.equal(seen.firstTime("a"), true);
});

test("reconnect waits grow, are capped and jittered", () => {
  assert.equal(reconnectDelayMs(1, () => 0), 500);
  assert.equal(reconnectDelayMs(1, () => 1), 1000);
  assert.equal(reconnectDelayMs(3, () => 1), 4000);
  assert.equal(reconnectDelayMs(9, () => 1), 10_000);
  assert.equal(reconnectDelayMs(9, () => 0), 5000);
});
