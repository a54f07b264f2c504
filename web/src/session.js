// One connection to a LiveKit room: the Room, its listeners, the microphone and the agent's audio.
//
// A session is opened once and closed once; close() removes every listener it added, detaches and
// removes every audio element, stops the microphone and disconnects, whatever state it got to.
// The controller decides what a session's events mean for the call.

import {
  DefaultReconnectPolicy,
  DisconnectReason,
  Room,
  RoomEvent,
  Track,
  createLocalAudioTrack,
} from "livekit-client";

import {
  AGENT_STATES,
  ATTR_AGENT_STATE,
  ATTR_END_REASON,
  ATTR_TRANSCRIBED_TRACK_ID,
  ATTR_TRANSCRIPTION_FINAL,
  ATTR_TRANSCRIPTION_SEGMENT_ID,
  MAX_MESSAGE_BYTES,
  TOPIC_AGENT_TURNS,
  TOPIC_CLIENT_ACTIONS,
  TOPIC_CLIENT_EVENTS,
  TOPIC_TRANSCRIPTION,
} from "./protocol.js";

// The SDK first tries to resume the same session (same room, same agent) for about 9 s; only
// when that fails does the page mint a new token and start over (see controller.js).
const SDK_RESUME_DELAYS_MS = [0, 300, 1200, 2700, 4800];
const DISCONNECT_TIMEOUT_MS = 3000;
const MAX_CAPTION_CHARS = 2000;
const HOLD_UNKNOWN_MS = 3000;
const MAX_HELD = 16;
// What the agent sends just before it hangs up (its goodbye caption and turn) rides the data
// channel, the news that it left the signalling connection: either may arrive first. Once it has
// left, the page waits at most this long for its goodbye turn, then for captions being read.
const DEPARTURE_GRACE_MS = 1500;
const AUDIO_CAPTURE = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** Disconnect reasons that mean the call is over, not that the network failed. */
export const FINAL_DISCONNECT_REASONS = new Set([
  DisconnectReason.CLIENT_INITIATED,
  DisconnectReason.DUPLICATE_IDENTITY,
  DisconnectReason.PARTICIPANT_REMOVED,
  DisconnectReason.ROOM_DELETED,
  DisconnectReason.ROOM_CLOSED,
  DisconnectReason.USER_REJECTED,
]);

/** The microphone with echo cancellation, noise suppression and gain control. */
export function openMicrophone() {
  return createLocalAudioTrack(AUDIO_CAPTURE);
}

export class CallSession {
  /**
   * `events` receives: agentJoined(participant), agentLeft(), agentState(state),
   * caption({segmentId, speaker, text, final}), clientAction(bytes, participant),
   * audioBlocked(bool), resuming(), resumed(), disconnected(reason).
   */
  constructor({ grant, microphone, audioSink, meter, events }) {
    this.grant = grant;
    this.room = new Room({
      adaptiveStream: false,
      dynacast: false,
      disconnectOnPageLeave: true,
      stopLocalTrackOnUnpublish: true,
      reconnectPolicy: new DefaultReconnectPolicy(SDK_RESUME_DELAYS_MS),
      audioCaptureDefaults: AUDIO_CAPTURE,
    });
    this.agent = null;
    this.endReason = null; // the agent's, once it hangs up (it then closes the room)
    this._agentIdentity = null; // kept after it leaves: its last captions may still arrive
    this._captionReads = new Set();
    this._goodbye = deferred(); // resolved by the agent's goodbye turn
    this._microphone = microphone;
    this._audioSink = audioSink;
    this._meter = meter;
    this._events = events;
    this._listeners = [];
    this._audioElements = new Set();
    this._held = new Map(); // identity -> {payloads, timer}: data from a sender not yet known
    this._closing = null;
  }

  /** Connect, publish the microphone and start the level meter. Throws if any step fails. */
  async open() {
    const room = this.room;
    this._listen(RoomEvent.ParticipantConnected, (p) => {
      this._release(p.identity, p);
      this._onParticipant(p);
    });
    this._listen(RoomEvent.ParticipantDisconnected, (p) => this._onParticipantLeft(p));
    this._listen(RoomEvent.ParticipantAttributesChanged, (changed, p) => this._onAttributes(changed, p));
    this._listen(RoomEvent.TrackSubscribed, (track, _pub, p) => this._onTrack(track, p));
    this._listen(RoomEvent.TrackUnsubscribed, (track) => this._dropTrack(track));
    this._listen(RoomEvent.DataReceived, (payload, p, _kind, topic, _encryption, identity) => {
      if (topic === TOPIC_AGENT_TURNS) this._onAgentTurn(payload, p?.identity ?? identity);
      if (topic !== TOPIC_CLIENT_ACTIONS) return;
      if (p === undefined && identity) this._hold(identity, payload);
      else this._events.clientAction(payload, p);
    });
    this._listen(RoomEvent.AudioPlaybackStatusChanged, () => {
      this._events.audioBlocked(!room.canPlaybackAudio);
    });
    this._listen(RoomEvent.Reconnecting, () => this._events.resuming());
    this._listen(RoomEvent.SignalReconnecting, () => this._events.resuming());
    this._listen(RoomEvent.Reconnected, () => this._events.resumed());
    this._listen(RoomEvent.Disconnected, (reason) => this._events.disconnected(reason));
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, info) => {
      const read = this._readCaption(reader, info.identity);
      this._captionReads.add(read);
      read.finally(() => this._captionReads.delete(read));
    });

    // Record the microphone until the agent has subscribed to it; the SDK then sends the
    // recording to the agent (LiveKit's pre-connect audio buffer), so words said while the call
    // is still connecting are heard. The SDK's own setMicrophoneEnabled does the same.
    if (!this._microphone.hasPreConnectBuffer) this._microphone.startPreConnectBuffer?.();
    await room.connect(this.grant.rtcUrl, this.grant.token, { autoSubscribe: true });
    await room.localParticipant.publishTrack(this._microphone, {
      source: Track.Source.Microphone,
      dtx: true,
    });
    this._meter.attach(this._microphone.mediaStreamTrack);
    for (const participant of room.remoteParticipants.values()) {
      this._onParticipant(participant);
      for (const publication of participant.audioTrackPublications.values()) {
        if (publication.track) this._onTrack(publication.track, participant);
      }
    }
    this._events.audioBlocked(!room.canPlaybackAudio);
  }

  /** Send one JSON message on `client_events`, to `identity` only. */
  async send(message, identity) {
    const bytes = new TextEncoder().encode(JSON.stringify(message));
    await this.room.localParticipant.publishData(bytes, {
      reliable: true,
      topic: TOPIC_CLIENT_EVENTS,
      destinationIdentities: identity ? [identity] : [],
    });
  }

  /** Start agent audio after a click (the "Enable audio" button). */
  startAudio() {
    return this.room.startAudio();
  }

  /** Undo everything open() did; safe to call at any point, any number of times. */
  close() {
    this._closing ??= this._close();
    return this._closing;
  }

  async _close() {
    for (const [event, handler] of this._listeners) this.room.off(event, handler);
    this._listeners = [];
    for (const held of this._held.values()) clearTimeout(held.timer);
    this._held.clear();
    try {
      this.room.unregisterTextStreamHandler(TOPIC_TRANSCRIPTION);
    } catch {
      // never registered
    }
    this._meter.detach();
    for (const element of this._audioElements) element.remove();
    this._audioElements.clear();
    for (const participant of this.room.remoteParticipants.values()) {
      for (const publication of participant.audioTrackPublications.values()) publication.track?.detach();
    }
    let timer = 0;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, DISCONNECT_TIMEOUT_MS);
    });
    await Promise.race([this.room.disconnect(true).catch(() => {}), timeout]);
    clearTimeout(timer);
    this._microphone.stopPreConnectBuffer?.();
    this._microphone.stop();
  }

  // A sender's first data packets can arrive before the news that it joined. Its messages wait
  // (in order, a bounded number, briefly) until we know who it is; then they are judged as usual.
  _hold(identity, payload) {
    let held = this._held.get(identity);
    if (held === undefined) {
      held = { payloads: [], timer: setTimeout(() => this._release(identity, undefined), HOLD_UNKNOWN_MS) };
      this._held.set(identity, held);
    }
    if (held.payloads.length < MAX_HELD) held.payloads.push(payload);
  }

  _release(identity, participant) {
    const held = this._held.get(identity);
    if (held === undefined) return;
    this._held.delete(identity);
    clearTimeout(held.timer);
    for (const payload of held.payloads) this._events.clientAction(payload, participant);
  }

  _listen(event, handler) {
    this.room.on(event, handler);
    this._listeners.push([event, handler]);
  }

  _onParticipant(participant) {
    if (!participant.isAgent || this.agent !== null) return;
    this.agent = participant;
    this._agentIdentity = participant.identity;
    this._events.agentJoined(participant);
    const state = participant.attributes[ATTR_AGENT_STATE];
    if (AGENT_STATES.includes(state)) this._events.agentState(state);
    this._readEndReason(participant.attributes);
  }

  _onParticipantLeft(participant) {
    if (participant === this.agent) {
      this.agent = null;
      this._settleDeparture().then(() => this._events.agentLeft());
    }
  }

  /** Until what the agent sent before leaving is shown (its goodbye turn, then the captions
   * being read), each wait bounded by the departure grace. */
  async _settleDeparture() {
    await within(this._goodbye.promise, DEPARTURE_GRACE_MS);
    await within(Promise.allSettled([...this._captionReads]), DEPARTURE_GRACE_MS);
  }

  _onAgentTurn(payload, identity) {
    if (identity === undefined || identity !== this._agentIdentity) return;
    if (payload.byteLength > MAX_MESSAGE_BYTES) return;
    let message;
    try {
      message = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return;
    }
    if (message?.type === "turn" && message.kind === "goodbye") this._goodbye.resolve();
  }

  _onAttributes(changed, participant) {
    if (participant !== this.agent) return;
    this._readEndReason(changed);
    if (!(ATTR_AGENT_STATE in changed)) return;
    const state = changed[ATTR_AGENT_STATE];
    if (AGENT_STATES.includes(state)) this._events.agentState(state);
  }

  _readEndReason(attributes) {
    const reason = attributes[ATTR_END_REASON];
    if (typeof reason === "string" && /^[a-z_]{1,40}$/.test(reason)) this.endReason = reason;
  }

  _onTrack(track, participant) {
    if (track.kind !== Track.Kind.Audio || !participant.isAgent) return;
    const element = track.attach();
    this._audioElements.add(element);
    this._audioSink.append(element);
  }

  _dropTrack(track) {
    for (const element of track.detach()) {
      element.remove();
      this._audioElements.delete(element);
    }
  }

  async _readCaption(reader, identity) {
    let attributes = reader.info.attributes ?? {};
    const local = this.room.localParticipant;
    const micSid = this._microphone.sid;
    let speaker = null;
    if (identity === local.identity || (micSid && attributes[ATTR_TRANSCRIBED_TRACK_ID] === micSid)) {
      speaker = "user";
    } else if (identity === this._agentIdentity || this.room.remoteParticipants.get(identity)?.isAgent) {
      speaker = "agent";
    }
    let text;
    try {
      text = await reader.readAll();
    } catch {
      return; // the stream was cut (the room closed mid-caption)
    }
    if (speaker === null || this._closing !== null) return;
    // LiveKit's agents send the final flag in the stream's trailer; the SDK merges the
    // trailer's attributes into the stream info once the stream has ended.
    attributes = reader.info.attributes ?? attributes;
    this._events.caption({
      segmentId: `${identity}/${attributes[ATTR_TRANSCRIPTION_SEGMENT_ID] || reader.info.id}`,
      speaker,
      text: text.slice(0, MAX_CAPTION_CHARS),
      final: attributes[ATTR_TRANSCRIPTION_FINAL] === "true",
    });
  }
}

function deferred() {
  let resolve = () => {};
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** `promise`, or nothing once `ms` have passed, whichever comes first. */
async function within(promise, ms) {
  let timer = 0;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  await Promise.race([promise, timeout]);
  clearTimeout(timer);
}
