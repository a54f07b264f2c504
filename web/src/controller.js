// The call, as the user sees it: a state machine over sessions, reconnects and client actions.
//
//   idle -> connecting -> in_call -> ending -> idle
//                            |  ^
//                            v  |
//                        reconnecting -> idle (gave up)
//
// Only `start()` leaves idle, and only from idle, so there are never two sessions at once. Every
// asynchronous step checks the generation it started in; End call (or a newer attempt) bumps it,
// and a step that finds itself stale closes what it opened and stops.
//
// Reconnect: the SDK resumes the same LiveKit session by itself after a short network blip (the
// call simply goes on). When it gives up, or the token behind it expired, the room is gone for
// this page: the controller mints a fresh token and connects again, with exponential backoff,
// jitter and at most MAX_RECONNECT_ATTEMPTS tries. A fresh token means a new room, so the agent
// starts a new call (it greets again); captions and the timer of the old one stay on the page.

import { DisconnectReason } from "livekit-client";

import { ActionsPanel } from "./actions-panel.js";
import { SeenIds, checkClientAction, normalizePolicy } from "./actions.js";
import { MAX_RECONNECT_ATTEMPTS, reconnectDelayMs } from "./backoff.js";
import { CaptionBoard } from "./captions.js";
import { ConfirmDialog } from "./confirm-dialog.js";
import { byId } from "./dom.js";
import { MicMeter } from "./meter.js";
import { PROTOCOL_VERSION } from "./protocol.js";
import { CallSession, FINAL_DISCONNECT_REASONS, openMicrophone } from "./session.js";
import { TokenError, fetchVoiceToken } from "./token.js";
import { CallView } from "./view.js";

const AGENT_JOIN_TIMEOUT_MS = 15_000;
// Why the agent hung up (its `end_reason` attribute), as the page says it.
const END_REASON_TEXT = {
  max_duration: "time limit reached",
  user_silent: "no answer for a while",
  repeated_failures: "it could not go on",
};
const MAX_ERROR_CHARS = 500;

class Stale extends Error {}

export class CallController {
  constructor() {
    this.view = new CallView();
    this.captions = new CaptionBoard({ list: byId("captions"), empty: byId("captions-empty") });
    this.actions = new ActionsPanel();
    this.dialog = new ConfirmDialog();
    this.meter = new MicMeter({ onLevel: (level) => this.view.setMicLevel(level) });
    this.audioSink = byId("audio-sink");
    this.state = "idle";
    this.session = null;
    this.generation = 0;
    this.policy = normalizePolicy(null);
    this.seenIds = new SeenIds();
    this._agentWait = 0;

    this.view.start.addEventListener("click", () => this.start());
    this.view.end.addEventListener("click", () => this.end());
    this.view.enableAudio.addEventListener("click", () => this._enableAudio());
    this._setState("idle");
  }

  /** Start a call (a click on Start call). Does nothing unless idle. */
  async start() {
    if (this.state !== "idle") return;
    const generation = ++this.generation;
    this.meter.unlock(); // inside the click, so the AudioContext may run
    this.view.clearError();
    this.captions.clear();
    this.actions.clear();
    this.seenIds = new SeenIds();
    this._setState("connecting");
    try {
      await this._open(generation, null);
    } catch (error) {
      if (error instanceof Stale || generation !== this.generation) return;
      await this._fail(error);
      return;
    }
    this.view.startTimer();
    this._setState("in_call");
  }

  /** End the call (a click on End call, or the call ended itself). */
  async end(message = null) {
    if (this.state === "idle" || this.state === "ending") return;
    this.generation += 1;
    this._setState("ending");
    await this._closeSession();
    this.view.stopTimer();
    this._setState("idle");
    if (message) this.view.showError(message);
  }

  // Sessions

  async _open(generation, previousRoom) {
    const check = () => {
      if (generation !== this.generation) throw new Stale();
    };
    let microphone;
    try {
      microphone = await openMicrophone();
    } catch (error) {
      throw microphoneError(error);
    }
    try {
      check();
      const grant = await fetchVoiceToken();
      check();
      const session = new CallSession({
        grant,
        microphone,
        audioSink: this.audioSink,
        meter: this.meter,
        events: this._eventsFor(() => this.session === session, previousRoom),
      });
      microphone = null; // the session owns it now and stops it on close
      this.session = session;
      this.policy = normalizePolicy(grant.clientPolicy);
      try {
        await session.open();
        check();
      } catch (error) {
        if (this.session === session) this.session = null;
        await session.close();
        check();
        throw new ConnectFailed(error);
      }
      if (session.agent === null) {
        this.view.showAgentState("waiting");
        this._waitForAgent(session);
      }
      return session;
    } finally {
      microphone?.stop();
    }
  }

  async _closeSession() {
    clearTimeout(this._agentWait);
    this.dialog.cancelAll();
    this.view.setAudioBlocked(false);
    this.view.showAgentState("none");
    const session = this.session;
    this.session = null;
    if (session !== null) await session.close();
  }

  _eventsFor(isCurrent, previousRoom) {
    const when =
      (handler) =>
      (...args) => {
        if (isCurrent()) handler(...args);
      };
    let contextSent = false;
    return {
      agentJoined: when(() => {
        clearTimeout(this._agentWait);
        this.view.showAgentState("initializing");
      }),
      agentLeft: when(() => {
        if (this.state === "in_call") this.end(this._agentEnded());
      }),
      agentState: when((state) => {
        this.view.showAgentState(state);
        // Once the agent is past initializing it has taken us on as its caller and listens.
        if (!contextSent && state !== "initializing" && this.session?.agent) {
          contextSent = true;
          this._sendContext(this.session.agent, previousRoom);
        }
      }),
      caption: when((caption) => this.captions.show(caption)),
      clientAction: when((bytes, participant) => this._onClientAction(bytes, participant)),
      audioBlocked: when((blocked) => this.view.setAudioBlocked(blocked)),
      resuming: when(() => {
        if (this.state === "in_call") {
          this.view.showState("in_call", "Connection interrupted. Resuming the call…");
        }
      }),
      resumed: when(() => {
        if (this.state === "in_call") this.view.showState("in_call");
      }),
      disconnected: when((reason) => this._onDisconnected(reason)),
    };
  }

  /** "The agent ended the call", with its reason when it gave one. */
  _agentEnded() {
    const reason = this.session?.endReason;
    if (!reason) return "The agent ended the call.";
    return `The agent ended the call (${END_REASON_TEXT[reason] ?? reason.replaceAll("_", " ")}).`;
  }

  _waitForAgent(session) {
    clearTimeout(this._agentWait);
    this._agentWait = setTimeout(() => {
      if (this.session === session && session.agent === null) {
        this.end("The agent is not available right now (it did not join the call). Try again in a moment.");
      }
    }, AGENT_JOIN_TIMEOUT_MS);
  }

  _onDisconnected(reason) {
    if (this.state !== "in_call") return;
    const hungUp = reason === DisconnectReason.PARTICIPANT_REMOVED || reason === DisconnectReason.ROOM_DELETED;
    if (hungUp && this.session?.endReason) {
      // The agent hung up as LiveKit's agents do: its reason on itself, then the room closed.
      this.end(this._agentEnded());
      return;
    }
    if (FINAL_DISCONNECT_REASONS.has(reason)) {
      this.end("The call was ended by the server.");
      return;
    }
    this._reconnect();
  }

  async _reconnect() {
    const generation = ++this.generation;
    const previousRoom = this.session?.grant.room ?? null;
    this._setState("reconnecting", "Connection lost. Reconnecting…");
    await this._closeSession();
    let lastError = null;
    for (let attempt = 1; attempt <= MAX_RECONNECT_ATTEMPTS; attempt += 1) {
      if (generation !== this.generation) return;
      this._setState("reconnecting", `Connection lost. Reconnecting (${attempt}/${MAX_RECONNECT_ATTEMPTS})…`);
      let wait = reconnectDelayMs(attempt);
      if (lastError instanceof TokenError && lastError.retryAfterS !== null) {
        wait = Math.max(wait, lastError.retryAfterS * 1000);
      }
      await sleep(wait);
      if (generation !== this.generation) return;
      try {
        await this._open(generation, previousRoom);
      } catch (error) {
        if (error instanceof Stale || generation !== this.generation) return;
        lastError = error;
        if (!isRetryable(error)) break;
        continue;
      }
      this._setState("in_call", "Reconnected. The agent starts a new call and may greet you again.");
      return;
    }
    if (generation !== this.generation) return;
    this.view.stopTimer();
    this._setState("idle");
    const why = lastError !== null && !isRetryable(lastError) ? ` ${describe(lastError)}` : "";
    this.view.showError(`The connection was lost and could not be restored.${why} Press Start call to try again.`);
  }

  async _fail(error) {
    await this._closeSession();
    this.view.stopTimer();
    this._setState("idle");
    if (error instanceof TokenError && error.kind === "rate_limited") {
      this.view.showRetryCountdown(describe(error), error.retryAfterS ?? 60);
      return;
    }
    this.view.showError(describe(error));
  }

  _setState(state, detail = null) {
    this.state = state;
    this.view.showState(state, detail);
  }

  async _enableAudio() {
    try {
      await this.session?.startAudio();
      this.view.setAudioBlocked(false);
    } catch {
      this.view.showError("The browser still blocks audio. Check the site's sound permission.");
    }
  }

  // Client actions

  _onClientAction(bytes, participant) {
    const session = this.session;
    if (!participant?.isAgent) {
      this.actions.audit({ id: null, action: null, outcome: "rejected", reason: "not sent by the agent" });
      return;
    }
    const result = checkClientAction(bytes, this.policy);
    if (result.id !== null && !this.seenIds.firstTime(result.id)) {
      this.actions.audit({ id: result.id, action: result.action, outcome: "ignored", reason: "repeated id" });
      return;
    }
    if (!result.ok) {
      this.actions.audit({ id: result.id, action: result.action, outcome: "rejected", reason: result.reason });
      if (result.id === null) return; // nothing to answer to
      if (result.action === "request_confirm") {
        this._answer(session, participant, { type: "user_confirmed", id: result.id, ok: false });
      } else {
        this._answer(session, participant, {
          type: "action_result",
          id: result.id,
          ok: false,
          error: result.reason.slice(0, MAX_ERROR_CHARS),
        });
      }
      return;
    }
    const { id, action, payload } = result;
    if (action === "request_confirm") {
      this._confirm(session, participant, id, payload);
      return;
    }
    if (action === "open_url") this.actions.showLink({ id, ...payload });
    if (action === "show_checklist") this.actions.showChecklist({ id, ...payload });
    this.actions.audit({ id, action, outcome: "executed", reason: null });
    this._answer(session, participant, { type: "action_result", id, ok: true });
  }

  async _confirm(session, participant, id, { prompt, tool, timeoutS }) {
    this.actions.audit({ id, action: "request_confirm", outcome: "asked", reason: null });
    const answer = await this.dialog.ask({ prompt, tool, timeoutS });
    if (answer === "cancelled") {
      this.actions.audit({ id, action: "request_confirm", outcome: "cancelled", reason: "the call ended" });
      return;
    }
    const reason = answer === "timeout" ? "no answer in time; counted as declined" : null;
    this.actions.audit({ id, action: "request_confirm", outcome: answer, reason });
    this._answer(session, participant, { type: "user_confirmed", id, ok: answer === "confirmed" });
  }

  _answer(session, participant, fields) {
    if (session === null || session !== this.session) return; // that call is over
    session.send({ v: PROTOCOL_VERSION, ...fields }, participant.identity).catch((error) => {
      console.warn("client_events: could not send", fields.type, error);
    });
  }

  _sendContext(participant, previousRoom) {
    const data = { client: "web", language: navigator.language };
    if (previousRoom) data.reconnect_of = previousRoom;
    this._answer(this.session, participant, { type: "context", data });
  }
}

class ConnectFailed extends Error {
  constructor(cause) {
    super("could not connect to the voice server", { cause });
  }
}

class MicrophoneError extends Error {
  constructor(kind) {
    super(kind);
    this.kind = kind;
  }
}

function microphoneError(error) {
  const name = error?.name ?? "";
  if (name === "NotAllowedError" || name === "SecurityError") return new MicrophoneError("denied");
  if (name === "NotFoundError" || name === "OverconstrainedError") return new MicrophoneError("missing");
  return new MicrophoneError("unavailable");
}

function isRetryable(error) {
  if (error instanceof TokenError) return error.retryable;
  return !(error instanceof MicrophoneError);
}

function describe(error) {
  if (error instanceof MicrophoneError) {
    return {
      denied: "Microphone access was denied. Allow the microphone for this site in the browser's settings, then press Start call again.",
      missing: "No microphone was found. Connect one and press Start call again.",
      unavailable: "The microphone could not be started; another application may be using it.",
    }[error.kind];
  }
  if (error instanceof TokenError) return error.message;
  if (error instanceof ConnectFailed) {
    return "Could not connect to the voice server. Check your network connection and try again.";
  }
  console.error(error);
  return "Something went wrong starting the call. Try again.";
}

function sleep(ms) {
  return new Promise((resolve) => {
    setTimeout(resolve, ms);
  });
}
