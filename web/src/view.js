// The call panel: status line, error box, agent state, timer and the call buttons.

import { byId, clock } from "./dom.js";

const STATUS_TEXT = {
  idle: "Ready. Press Start call to talk to the agent.",
  connecting: "Connecting…",
  in_call: "In call.",
  reconnecting: "Reconnecting…",
  ending: "Ending the call…",
};

const AGENT_TEXT = {
  none: "Not in a call",
  waiting: "Waiting for the agent to join…",
  initializing: "Getting ready",
  listening: "Listening",
  thinking: "Thinking",
  speaking: "Speaking",
};

export class CallView {
  constructor() {
    this.start = byId("start-call");
    this.end = byId("end-call");
    this.enableAudio = byId("enable-audio");
    this.status = byId("call-status");
    this.errorBox = byId("call-error");
    this.errorText = byId("call-error-text");
    this.agentState = byId("agent-state");
    this.timer = byId("call-timer");
    this.meter = byId("mic-level");
    this._timerHandle = null;
    this._blockedUntil = 0;
    this._blockHandle = null;
    this._focusStartWhenIdle = false;
  }

  /** Show the controller's state; `detail` replaces the default status text. */
  showState(state, detail = null) {
    this.status.dataset.state = state;
    this.status.textContent = detail ?? STATUS_TEXT[state] ?? state;
    document.body.dataset.callState = state;
    const idle = state === "idle";
    const hadFocus = document.activeElement;
    this.start.disabled = !idle || Date.now() < this._blockedUntil;
    this.end.disabled = idle || state === "ending";
    // Keep keyboard focus on the button that matters now, not on one that just got disabled.
    // While ending, neither button can be used: focus returns to Start once the call is over.
    if (hadFocus === this.end && this.end.disabled && !idle) this._focusStartWhenIdle = true;
    if (idle && (hadFocus === this.end || this._focusStartWhenIdle)) {
      this._focusStartWhenIdle = false;
      this.start.focus();
    } else if (hadFocus === this.start && !idle && !this.end.disabled) {
      this.end.focus();
    }
  }

  showAgentState(state) {
    this.agentState.dataset.state = state;
    this.agentState.textContent = AGENT_TEXT[state] ?? state;
  }

  showError(message) {
    this.errorText.textContent = message;
    this.errorBox.hidden = false;
  }

  clearError() {
    this._stopBlock();
    this.errorText.textContent = "";
    this.errorBox.hidden = true;
  }

  /** A rate-limit message with a live countdown; Start stays disabled until it runs out. */
  showRetryCountdown(prefix, seconds) {
    this._stopBlock();
    this._blockedUntil = Date.now() + seconds * 1000;
    const render = () => {
      const left = Math.ceil((this._blockedUntil - Date.now()) / 1000);
      if (left <= 0) {
        this.errorText.textContent = `${prefix} You can try again now.`;
        this._stopBlock();
        this.start.disabled = document.body.dataset.callState !== "idle";
        return;
      }
      this.errorText.textContent = `${prefix} Try again in ${left} s.`;
    };
    this.errorBox.hidden = false;
    this.start.disabled = true;
    render();
    this._blockHandle = setInterval(render, 1000);
  }

  _stopBlock() {
    if (this._blockHandle !== null) clearInterval(this._blockHandle);
    this._blockHandle = null;
    this._blockedUntil = 0;
  }

  setAudioBlocked(blocked) {
    this.enableAudio.hidden = !blocked;
  }

  setMicLevel(level) {
    this.meter.value = level;
    const words = level > 0.05 ? "sound" : "silent";
    if (this.meter.textContent !== words) this.meter.textContent = words;
  }

  startTimer() {
    this.stopTimer();
    const started = performance.now();
    const render = () => {
      const seconds = (performance.now() - started) / 1000;
      this.timer.textContent = clock(seconds);
      this.timer.dateTime = `PT${Math.floor(seconds)}S`;
    };
    render();
    this._timerHandle = setInterval(render, 1000);
  }

  stopTimer() {
    if (this._timerHandle !== null) clearInterval(this._timerHandle);
    this._timerHandle = null;
  }
}
