// The in-page confirmation dialog for `request_confirm` (never window.confirm).
//
// A modal <dialog>: the rest of the page is inert while it is open, Tab and Shift+Tab cycle
// between its two buttons, Escape declines, focus starts on Decline (the safe answer) and returns
// to where it was when the dialog closes. The prompt is shown as text. Requests queue: one dialog
// at a time, each with its own deadline, after which it counts as declined.

import { byId } from "./dom.js";

export class ConfirmDialog {
  constructor() {
    this._dialog = byId("confirm-dialog");
    this._prompt = byId("confirm-prompt");
    this._tool = byId("confirm-tool");
    this._countdown = byId("confirm-countdown");
    this._accept = byId("confirm-accept");
    this._decline = byId("confirm-decline");
    this._queue = [];
    this._current = null;
    this._tick = null;
    this._returnFocus = null;
    this._accept.addEventListener("click", () => this._answer("confirmed"));
    this._decline.addEventListener("click", () => this._answer("declined"));
    this._dialog.addEventListener("cancel", (event) => {
      event.preventDefault(); // Escape: we close it ourselves, as a decline
      this._answer("declined");
    });
    this._dialog.addEventListener("keydown", (event) => this._trapTab(event));
  }

  /**
   * Ask the user; resolves to "confirmed", "declined", "timeout" or "cancelled" (the call ended).
   * The deadline runs from now, also while the request waits behind another one.
   */
  ask({ prompt, tool, timeoutS }) {
    return new Promise((resolve) => {
      const request = { prompt, tool, deadline: performance.now() + timeoutS * 1000, resolve };
      this._queue.push(request);
      if (this._current === null) this._showNext();
    });
  }

  /** Close everything as "cancelled" (the call is over; nobody is waiting for an answer). */
  cancelAll() {
    const pending = [...this._queue];
    this._queue = [];
    for (const request of pending) request.resolve("cancelled");
    if (this._current !== null) this._answer("cancelled");
  }

  _showNext() {
    while (this._queue.length) {
      const request = this._queue.shift();
      if (performance.now() >= request.deadline) {
        request.resolve("timeout");
        continue;
      }
      this._current = request;
      this._prompt.textContent = request.prompt;
      this._tool.hidden = !request.tool;
      this._tool.textContent = request.tool ? `Action: ${request.tool}` : "";
      if (!this._dialog.open) {
        this._returnFocus = document.activeElement;
        this._dialog.showModal();
      }
      this._decline.focus();
      this._renderCountdown();
      this._tick = setInterval(() => this._renderCountdown(), 250);
      return;
    }
    if (this._dialog.open) this._dialog.close();
    const target = this._returnFocus;
    this._returnFocus = null;
    if (target instanceof HTMLElement && target.isConnected && !target.disabled) target.focus();
  }

  _renderCountdown() {
    const left = Math.ceil((this._current.deadline - performance.now()) / 1000);
    if (left <= 0) {
      this._answer("timeout");
      return;
    }
    this._countdown.textContent = `Declined automatically in ${left} s.`;
  }

  _answer(answer) {
    const request = this._current;
    if (request === null) return;
    clearInterval(this._tick);
    this._tick = null;
    this._current = null;
    request.resolve(answer);
    this._showNext();
  }

  _trapTab(event) {
    if (event.key !== "Tab") return;
    const order = [this._decline, this._accept];
    const at = order.indexOf(document.activeElement);
    const next = event.shiftKey ? (at <= 0 ? order.length - 1 : at - 1) : (at + 1) % order.length;
    event.preventDefault();
    order[next].focus();
  }
}
