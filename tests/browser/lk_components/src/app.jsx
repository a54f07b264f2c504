// A voice page built only from LiveKit's own client components, as a LiveKit user would write it:
// useSession + useAgent (state, failures), useVoiceAssistant (legacy transcription packets),
// useTranscriptions (lk.transcription text streams). What they expose is recorded on
// window.__lk for the test; the page knows nothing of our agent beyond the LiveKit conventions.

import { Room, RoomEvent, TokenSource } from "livekit-client";
import {
  RoomAudioRenderer,
  SessionProvider,
  useAgent,
  useSession,
  useTranscriptions,
  useVoiceAssistant,
} from "@livekit/components-react";
import { useEffect, useMemo, useRef } from "react";
import { createRoot } from "react-dom/client";

const seen = {
  states: [], // useAgent().state, each change
  failureReasons: [], // every reason useAgent ever reported
  agentTranscriptions: {}, // useVoiceAssistant(): segment id -> {text, final}
  transcriptions: {}, // useTranscriptions(): stream id -> {identity, segment, final, text}
  disconnectReason: null,
  endReason: null, // our agent's end_reason attribute (not a LiveKit convention: read directly)
};
window.__lk = seen;

function Probe({ session }) {
  const agent = useAgent(session);
  const { agentTranscriptions } = useVoiceAssistant();
  const transcriptions = useTranscriptions();

  useEffect(() => {
    if (seen.states.at(-1) !== agent.state) seen.states.push(agent.state);
    for (const reason of agent.failureReasons ?? []) {
      if (!seen.failureReasons.includes(reason)) seen.failureReasons.push(reason);
    }
  }, [agent.state, agent.failureReasons]);

  useEffect(() => {
    for (const segment of agentTranscriptions) {
      seen.agentTranscriptions[segment.id] = { text: segment.text, final: segment.final };
    }
  }, [agentTranscriptions]);

  useEffect(() => {
    for (const stream of transcriptions) {
      const attributes = stream.streamInfo.attributes ?? {};
      seen.transcriptions[stream.streamInfo.id] = {
        identity: stream.participantInfo.identity,
        segment: attributes["lk.segment_id"],
        final: attributes["lk.transcription_final"] === "true",
        text: stream.text,
      };
    }
  }, [transcriptions]);

  return <RoomAudioRenderer />;
}

function App({ grant }) {
  const source = useMemo(
    () => TokenSource.literal({ serverUrl: grant.rtc_url, participantToken: grant.token }),
    [grant],
  );
  // useSession's start() asks for the pre-connect buffer in its publish options, which
  // livekit-client 2.23.0 does not read there (only the room's publish defaults): set it there.
  const room = useMemo(() => new Room({ publishDefaults: { preConnectBuffer: true } }), []);
  const session = useSession(source, { room });
  const { start } = session;
  const started = useRef(false);
  useEffect(() => {
    const onDisconnected = (reason) => {
      seen.disconnectReason = reason;
    };
    const onAttributes = (changed) => {
      if (changed.end_reason) seen.endReason = changed.end_reason;
    };
    room.on(RoomEvent.Disconnected, onDisconnected);
    room.on(RoomEvent.ParticipantAttributesChanged, onAttributes);
    return () => {
      room.off(RoomEvent.Disconnected, onDisconnected);
      room.off(RoomEvent.ParticipantAttributesChanged, onAttributes);
    };
  }, [room]);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    start(); // the microphone, with the pre-connect audio buffer, as it ships
  }, [start]);
  return (
    <SessionProvider session={session}>
      <Probe session={session} />
    </SessionProvider>
  );
}

window.startCall = (grant) => {
  createRoot(document.getElementById("root")).render(<App grant={grant} />);
};
