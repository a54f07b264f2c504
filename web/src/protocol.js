// Names shared with the agent (voice_agent/protocol.py). Changing one changes a public contract.

export const ATTR_AGENT_STATE = "lk.agent.state";
export const TOPIC_TRANSCRIPTION = "lk.transcription";
export const ATTR_TRANSCRIPTION_FINAL = "lk.transcription_final";
export const ATTR_TRANSCRIPTION_SEGMENT_ID = "lk.segment_id";
export const ATTR_TRANSCRIBED_TRACK_ID = "lk.transcribed_track_id";
// This project's agent attribute: why the agent hung up, set just before it closes the room.
export const ATTR_END_REASON = "end_reason";

export const TOPIC_CLIENT_ACTIONS = "client_actions"; // agent -> app
export const TOPIC_CLIENT_EVENTS = "client_events"; // app -> agent
export const TOPIC_AGENT_TURNS = "agent_turns"; // agent -> app: one summary per finished turn
export const MAX_MESSAGE_BYTES = 8 * 1024;
export const PROTOCOL_VERSION = 1;

export const AGENT_STATES = ["initializing", "listening", "thinking", "speaking"];
