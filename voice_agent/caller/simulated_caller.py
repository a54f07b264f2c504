"""`voice-agent call`: a caller that joins like a browser, speaks, listens and reports.

It asks the token service for a token exactly as the web client does, joins the room, publishes a
microphone track fed in real time (speech from WAV files or a local synthesiser, silence between),
records the agent's audio, follows `lk.agent.state`, captions and the agent's per-turn summaries,
and returns one JSON-ready result. It is a developer tool and the end-to-end test driver. Given a
token minted elsewhere and told to hear turns in the audio, it also calls agents that are not
ours (the side-by-side benchmark drives other frameworks' agents with it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from livekit import rtc

from voice_agent.agent import ffi_routing
from voice_agent.caller.audio import (
    FRAME_MS,
    ROOM_RATE,
    SAMPLES_PER_FRAME,
    Utterance,
    rms_dbfs,
    write_wav,
)
from voice_agent.logging import get_logger
from voice_agent.protocol import (
    ATTR_AGENT_STATE,
    ATTR_END_REASON,
    ATTR_TRANSCRIPTION_FINAL,
    ATTR_TRANSCRIPTION_SEGMENT_ID,
    PROTOCOL_VERSION,
    TOPIC_AGENT_TURNS,
    TOPIC_CHAT,
    TOPIC_CLIENT_ACTIONS,
    TOPIC_CLIENT_EVENTS,
    TOPIC_LEGACY_CHAT,
    TOPIC_TRANSCRIPTION,
    TurnKind,
)

log = get_logger("caller")

_SILENCE = b"\0" * (SAMPLES_PER_FRAME * 2)
# How long a turn message may trail the agent's departure (they travel different paths).
_DEPARTURE_GRACE_S = 2.0


class CallFailedError(Exception):
    """The call could not be made or did not go as a call should."""


@dataclass(frozen=True)
class CallerOptions:
    """What the simulated caller does."""

    url: str = "http://127.0.0.1:8080"
    utterances: tuple[Utterance, ...] = ()
    interrupt_after_ms: int | None = None
    interruption: Utterance | None = None
    """What the caller says `interrupt_after_ms` into the answer (None: the utterance again)."""
    interruption_answered: bool = True
    """Whether the agent answers what was said over it (False: a backchannel it talks over)."""
    hang_up_after_ms: int | None = None
    """After the last utterance, hang up this long into the agent's answer (leaving mid-reply)."""
    record: Path | None = None
    bearer_token: str | None = None
    wait_for_greeting: bool = True
    agent_join_timeout_s: float = 20.0
    turn_timeout_s: float = 30.0
    trailing_silence_s: float = 0.0
    silence_dbfs: float = -55.0
    listen_audio: bool = True
    """Subscribe to the agent's audio (needed for `record` and caller-side voice-to-voice);
    load tests turn it off to spare the caller's CPU."""
    before_first_turn: Callable[[], Awaitable[None]] | None = None
    """Awaited after the greeting, before the first utterance: load tests line callers up so
    that every measured turn runs with all their calls connected."""
    microphone_delay_s: float = 0.0
    """Publish the microphone this long after joining (a slow device, or a busy server)."""
    confirm: bool | None = None
    """Answer the agent's `request_confirm` actions yes (True) or no (False); None: ignore them."""
    typed: tuple[str, ...] = ()
    """Chat messages to type after the greeting, before speaking, each answered in turn: sent as
    LiveKit's client components send them (a text stream on `lk.chat`, then the legacy packet)."""
    between_turns: Callable[[int], Awaitable[None]] | None = None
    """Awaited after each turn but the last, with the number of turns done (a test cuts the
    network here, or a load test paces its callers)."""
    grant: Mapping[str, Any] | None = None
    """Join with this token service answer (`rtc_url`, `token`, `room`) instead of asking for a
    new one: a rejoin with the same voice token, or an agent dispatched by other means."""
    turns_from_audio: bool = False
    """A turn is over when the agent's audio, once heard, stays quiet for `turn_quiet_s`, instead
    of when the agent's turn summary arrives (agents that send none); such turns carry no text."""
    turn_quiet_s: float = 1.0


@dataclass
class _Listening:
    """What the caller heard and saw, filled in by room events."""

    states: list[str] = field(default_factory=list)
    turns: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    captions: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_actions: list[dict[str, Any]] = field(default_factory=list)
    recording: bytearray = field(default_factory=bytearray)
    agent_audio_s: float = 0.0
    first_audio_after: float | None = None
    audio_heard_at: float = 0.0
    last_audible_at: float = 0.0
    audio_heard: asyncio.Event = field(default_factory=asyncio.Event)
    agent_joined: asyncio.Event = field(default_factory=asyncio.Event)
    agent_left: asyncio.Event = field(default_factory=asyncio.Event)
    goodbye: asyncio.Event = field(default_factory=asyncio.Event)  # the agent's goodbye turn
    agent_identity: str | None = None
    ended_by_server: asyncio.Event = field(default_factory=asyncio.Event)
    disconnect_reason: str | None = None
    end_reason: str | None = None  # the agent's, set on itself before it closes the room
    hung_up_by_agent: bool = False  # the agent closed the room with its end reason set
    caption_seen: asyncio.Condition = field(default_factory=asyncio.Condition)


class SimulatedCaller:
    """One simulated call; `await run()` returns the result dictionary."""

    def __init__(self, *, options: CallerOptions) -> None:
        self._opts = options
        self._heard = _Listening()
        # Microphone frames to send, each with where in it the speech ends (None: not in it).
        self._speech: collections.deque[tuple[bytes, float | None]] = collections.deque()
        self._speech_done = asyncio.Event()
        self._speech_ended_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._caption_reads: set[asyncio.Task[None]] = set()
        self._room = rtc.Room()
        self._grant: dict[str, Any] = {}

    async def run(self) -> dict[str, Any]:
        """Make the call; never raises for call failures (they go in `ok`/`error`)."""
        error: str | None = None
        turns: list[dict[str, Any]] = []
        greeting: str | None = None
        try:
            self._grant = dict(self._opts.grant) if self._opts.grant else await self._fetch_token()
            await self._join()
            if self._opts.wait_for_greeting:
                greeting = (await self._next_turn(TurnKind.GREETING))["agent_text"]
            if self._opts.before_first_turn is not None:
                await self._opts.before_first_turn()
            for text in self._opts.typed:
                turns += await self._type_turn(text)
            for i, utterance in enumerate(self._opts.utterances):
                last = i == len(self._opts.utterances) - 1
                if last and self._opts.hang_up_after_ms is not None:
                    await self._say(utterance)
                    await asyncio.sleep(self._opts.hang_up_after_ms / 1000)  # scripted hang-up
                    break
                turns += await self._speak_turn(utterance)
                if not last and self._opts.between_turns is not None:
                    await self._opts.between_turns(i + 1)
                if last:
                    await self._settle_captions()
            if self._opts.trailing_silence_s > 0:
                # Stay on the line, quietly, until the time is up or the agent hangs up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._heard.agent_left.wait(), self._opts.trailing_silence_s
                    )
                    await self._settle_departure()
        except CallFailedError as e:
            error = str(e)
        except (aiohttp.ClientError, rtc.ConnectError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            await self._hang_up()
        if self._opts.record is not None:
            write_wav(self._opts.record, bytes(self._heard.recording))
        room = self._grant.get("room", "")
        heard = self._heard
        if heard.hung_up_by_agent:
            ended = {"by": "agent", "reason": heard.end_reason}
        elif heard.disconnect_reason is not None:
            ended = {"by": "server", "reason": heard.disconnect_reason}
        else:
            ended = {"by": "caller", "reason": None}
        return {
            "call_id": room.removeprefix("call-") if room else None,
            "room": room or None,
            "ok": error is None,
            "error": error,
            "states": self._heard.states,
            "agent_audio_seconds": round(self._heard.agent_audio_s, 3),
            "greeting": greeting,
            "turns": turns,
            "ended": ended,
            "client_actions": self._heard.client_actions,
            "captions": [
                {"speaker": c["speaker"], "text": c["text"], "final": c["final"]}
                for c in self._heard.captions.values()
            ],
        }

    async def _fetch_token(self) -> dict[str, Any]:
        headers = {}
        if self._opts.bearer_token:
            headers["Authorization"] = f"Bearer {self._opts.bearer_token}"
        timeout = aiohttp.ClientTimeout(total=10)
        url = self._opts.url.rstrip("/") + "/api/voice-token"
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, json={"display_name": "simulated caller"}, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise CallFailedError(f"token service answered {resp.status}: {body}")
            return dict(body)

    async def _join(self) -> None:
        room = self._room
        room.on("participant_attributes_changed", self._on_attributes)
        room.on("participant_connected", self._on_participant)
        room.on("participant_disconnected", self._on_participant_left)
        room.on("track_subscribed", self._on_track)
        room.on("data_received", self._on_data)
        room.on("disconnected", self._on_disconnected)
        room.on("reconnecting", lambda: log.info("caller.resuming"))
        room.on("reconnected", lambda: log.info("caller.resumed"))
        room.register_text_stream_handler(TOPIC_TRANSCRIPTION, self._on_caption)
        await room.connect(
            self._grant["rtc_url"],
            self._grant["token"],
            options=rtc.RoomOptions(auto_subscribe=self._opts.listen_audio),
        )
        ffi_routing.narrow_room(room)  # many callers in one process: see ffi_routing
        log.info("caller.joined", room=room.name, identity=room.local_participant.identity)
        for participant in room.remote_participants.values():
            self._on_participant(participant)
            for pub in participant.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, participant)
        if self._opts.microphone_delay_s:
            await asyncio.sleep(self._opts.microphone_delay_s)
        source = rtc.AudioSource(ROOM_RATE, 1, queue_size_ms=2 * FRAME_MS)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        self._spawn(self._microphone(source))
        joined = asyncio.ensure_future(self._heard.agent_joined.wait())
        ended = asyncio.ensure_future(self._heard.ended_by_server.wait())
        try:
            await asyncio.wait(
                {joined, ended},
                timeout=self._opts.agent_join_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            joined.cancel()
            ended.cancel()
        if not self._heard.agent_joined.is_set():
            self._raise_if_ended_by_server()
            raise CallFailedError(f"no agent joined within {self._opts.agent_join_timeout_s:g} s")

    async def _speak_turn(self, utterance: Utterance) -> list[dict[str, Any]]:
        v2v = [await self._say(utterance)]
        expected = 1
        if self._opts.interrupt_after_ms is not None:
            await asyncio.sleep(self._opts.interrupt_after_ms / 1000)  # scripted barge-in point
            over = self._opts.interruption or utterance
            if self._opts.interruption_answered:
                v2v.append(await self._say(over))
                expected = 2
            else:  # the agent carries on: no new audio to time, no second turn
                await self._say_only(over)
        turns = []
        for i in range(expected):
            turn = await self._next_turn(TurnKind.REPLY)
            turn["caller_voice_to_voice_ms"] = v2v[i] if i < len(v2v) else None
            turns.append(turn)
        return turns

    async def _type_turn(self, text: str) -> list[dict[str, Any]]:
        """Type one chat message; the agent's answer."""
        participant = self._room.local_participant
        info = await participant.send_text(text, topic=TOPIC_CHAT)
        legacy = {"id": info.stream_id, "timestamp": int(time.time() * 1000), "message": text}
        await participant.publish_data(
            json.dumps({**legacy, "ignoreLegacy": True}), reliable=True, topic=TOPIC_LEGACY_CHAT
        )
        log.info("caller.typed", chars=len(text))
        return [await self._next_turn(TurnKind.REPLY)]

    async def _say_only(self, utterance: Utterance) -> None:
        """Speak one utterance over the agent, waiting only until it is sent."""
        self._speech_done.clear()
        for frame in utterance.frames():
            self._speech.append((frame, None))
        await self._speech_done.wait()

    async def _say(self, utterance: Utterance) -> float | None:
        """Speak one utterance; ms from the end of its speech to the agent's first audible audio.

        The end is the last voiced sample, not the end of the clip (a recording's silent tail
        would otherwise be counted as the agent's time), taken when the microphone sends it.
        """
        self._speech_done.clear()
        self._heard.first_audio_after = None
        self._heard.audio_heard.clear()
        frames = utterance.frames()
        end_frame, end_offset = divmod(utterance.speech_end_sample, SAMPLES_PER_FRAME)
        if end_offset == 0 and end_frame > 0:  # the speech fills its last frame exactly
            end_frame, end_offset = end_frame - 1, SAMPLES_PER_FRAME
        end_frame = min(end_frame, len(frames) - 1)
        for i, frame in enumerate(frames):
            self._speech.append((frame, end_offset / ROOM_RATE if i == end_frame else None))
        log.info(
            "caller.speaking", utterance=utterance.label, seconds=round(utterance.duration_s, 2)
        )
        await self._speech_done.wait()
        ended = self._speech_ended_at
        if not self._opts.listen_audio:
            return None
        try:
            await asyncio.wait_for(self._heard.audio_heard.wait(), self._opts.turn_timeout_s)
        except TimeoutError:
            return None
        return round((self._heard.audio_heard_at - ended) * 1000, 1)

    async def _next_turn(self, kind: TurnKind) -> dict[str, Any]:
        if self._opts.turns_from_audio:
            return await self._next_audio_turn(kind)
        deadline = time.monotonic() + self._opts.turn_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            # Data and the departure travel different paths (data channel, signalling): a turn
            # the agent sent just before leaving may still be on its way.
            left = self._heard.agent_left.is_set() and self._heard.turns.empty()
            if left and not await self._turn_in_flight():
                raise CallFailedError(f"the agent left before its {kind} turn")
            if self._heard.turns.empty():
                self._raise_if_ended_by_server()
            getter = asyncio.ensure_future(self._heard.turns.get())
            ended = asyncio.ensure_future(self._heard.ended_by_server.wait())
            try:
                await asyncio.wait(
                    {getter, ended},
                    timeout=max(remaining, 0.001),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                ended.cancel()
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                self._raise_if_ended_by_server()
                raise CallFailedError(
                    f"no {kind} turn from the agent within {self._opts.turn_timeout_s:g} s"
                )
            turn = getter.result()
            if turn.get("kind") == kind:
                return {
                    "user_text": turn.get("user_text", ""),
                    "agent_text": turn.get("agent_text", ""),
                    "interrupted": bool(turn.get("interrupted", False)),
                    "metrics": turn.get("metrics", {}),
                }

    async def _settle_departure(self) -> None:
        """The agent hung up: its goodbye turn and captions, sent just before it left, may still
        be on their way (data and signalling travel different paths); let them arrive."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._heard.goodbye.wait(), _DEPARTURE_GRACE_S)
        await self._settle_captions()

    async def _settle_captions(self) -> None:
        """Until every caption segment seen has its final version and no caption is being read
        (bounded): a caption and the turn summary travel different paths, so the summary can
        arrive while the turn's final caption is still on its way."""
        heard = self._heard

        def settled() -> bool:
            reading = any(not task.done() for task in self._caption_reads)
            return not reading and all(c.get("final") for c in heard.captions.values())

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DEPARTURE_GRACE_S), heard.caption_seen:
                await heard.caption_seen.wait_for(settled)

    async def _next_audio_turn(self, kind: TurnKind) -> dict[str, Any]:
        """Wait until the agent has spoken since the caller's speech ended (or since joining, for
        the greeting) and then stayed quiet for `turn_quiet_s`."""
        since = self._speech_ended_at
        deadline = time.monotonic() + self._opts.turn_timeout_s
        while True:
            now = time.monotonic()
            last = self._heard.last_audible_at
            if last > since and now - last >= self._opts.turn_quiet_s:
                return {"user_text": "", "agent_text": "", "interrupted": False, "metrics": {}}
            if self._heard.agent_left.is_set():
                raise CallFailedError(f"the agent left before its {kind} turn")
            if now >= deadline:
                raise CallFailedError(
                    f"no {kind} turn from the agent within {self._opts.turn_timeout_s:g} s"
                )
            await asyncio.sleep(min(0.05, self._opts.turn_quiet_s / 4))

    async def _turn_in_flight(self) -> bool:
        """After the agent left: whether a turn message still arrives within a short grace."""
        try:
            turn = await asyncio.wait_for(self._heard.turns.get(), _DEPARTURE_GRACE_S)
        except TimeoutError:
            return False
        self._heard.turns.put_nowait(turn)  # the queue was empty: it is first in line again
        return True

    async def _microphone(self, source: rtc.AudioSource) -> None:
        """Feed the microphone in real time: queued speech, else silence."""
        next_at = time.monotonic()
        speaking = False
        while True:
            frame, speech_ends_in = self._speech.popleft() if self._speech else (None, None)
            if speech_ends_in is not None:
                # The last voiced sample leaves this far into the frame sent now.
                self._speech_ended_at = time.monotonic() + speech_ends_in
                self._heard.first_audio_after = self._speech_ended_at
            if frame is None and speaking:
                speaking = False
                self._speech_done.set()
            speaking = speaking or frame is not None
            await source.capture_frame(
                rtc.AudioFrame(frame or _SILENCE, ROOM_RATE, 1, SAMPLES_PER_FRAME)
            )
            next_at += FRAME_MS / 1000
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # fell far behind (a stalled loop): resynchronise
                next_at = time.monotonic()

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=ROOM_RATE, num_channels=1)
        try:
            async for event in stream:
                frame = event.frame
                data = frame.data.cast("B")
                if self._opts.record is not None:
                    self._heard.recording += data
                if rms_dbfs(data) > self._opts.silence_dbfs:
                    self._heard.agent_audio_s += frame.duration
                    after = self._heard.first_audio_after
                    now = time.monotonic()
                    self._heard.last_audible_at = now
                    if not self._heard.audio_heard.is_set() and after is not None and now >= after:
                        self._heard.audio_heard_at = now
                        self._heard.audio_heard.set()
        finally:
            await stream.aclose()

    def _is_agent(self, participant: rtc.RemoteParticipant) -> bool:
        return bool(participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if self._is_agent(participant):
            self._heard.agent_identity = participant.identity
            self._heard.agent_joined.set()
            state = participant.attributes.get(ATTR_AGENT_STATE)
            if state:
                self._record_state(state)

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self._heard.agent_identity:
            self._heard.agent_left.set()

    def _on_disconnected(self, reason: rtc.DisconnectReason.ValueType) -> None:
        if reason == rtc.DisconnectReason.CLIENT_INITIATED:
            return
        heard = self._heard
        closed = (rtc.DisconnectReason.PARTICIPANT_REMOVED, rtc.DisconnectReason.ROOM_DELETED)
        if reason in closed and heard.end_reason is not None:
            # The agent hung up as LiveKit's agents do: its reason, then the room closed.
            heard.hung_up_by_agent = True
            heard.agent_left.set()
            return
        heard.disconnect_reason = rtc.DisconnectReason.Name(reason)
        heard.ended_by_server.set()

    def _raise_if_ended_by_server(self) -> None:
        if self._heard.disconnect_reason is not None:
            raise CallFailedError(f"the server ended the call ({self._heard.disconnect_reason})")

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity != self._heard.agent_identity:
            return
        if ATTR_AGENT_STATE in changed:
            self._record_state(changed[ATTR_AGENT_STATE])
        if changed.get(ATTR_END_REASON):
            self._heard.end_reason = changed[ATTR_END_REASON]

    def _record_state(self, state: str) -> None:
        if not self._heard.states or self._heard.states[-1] != state:
            self._heard.states.append(state)

    def _on_track(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and self._is_agent(participant):
            self._spawn(self._listen(track))

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC_CLIENT_ACTIONS:
            self._on_client_action(packet.data)
            return
        if packet.topic != TOPIC_AGENT_TURNS:
            return
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            message = json.loads(packet.data)
            if isinstance(message, dict) and message.get("type") == "turn":
                self._heard.turns.put_nowait(message)
                if message.get("kind") == TurnKind.GOODBYE:
                    self._heard.goodbye.set()

    def _on_client_action(self, data: bytes) -> None:
        """Keep what the agent asked of the app; answer confirmations as the options say."""
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(message, dict) or message.get("type") != "client_action":
            return
        self._heard.client_actions.append(message)
        if message.get("action") == "request_confirm":
            if self._opts.confirm is None:
                return
            answer = {
                "type": "user_confirmed",
                "v": PROTOCOL_VERSION,
                "id": message.get("id"),
                "ok": self._opts.confirm,
            }
        else:
            answer = {
                "type": "action_result",
                "v": PROTOCOL_VERSION,
                "id": message.get("id"),
                "ok": True,
            }
        self._spawn(
            self._room.local_participant.publish_data(
                json.dumps(answer), reliable=True, topic=TOPIC_CLIENT_EVENTS
            )
        )

    def _on_caption(self, reader: rtc.TextStreamReader, sender: str) -> None:
        task = self._spawn(self._read_caption(reader, sender))
        self._caption_reads.add(task)
        task.add_done_callback(self._caption_read_done)

    def _caption_read_done(self, task: asyncio.Task[None]) -> None:
        self._caption_reads.discard(task)
        self._spawn(self._announce_caption())

    async def _announce_caption(self) -> None:
        async with self._heard.caption_seen:
            self._heard.caption_seen.notify_all()

    async def _read_caption(self, reader: rtc.TextStreamReader, sender: str) -> None:
        attrs = reader.info.attributes or {}
        segment = attrs.get(ATTR_TRANSCRIPTION_SEGMENT_ID) or reader.info.stream_id
        try:
            text = await reader.read_all()
        except rtc.StreamError:  # the room closed mid-caption
            return
        speaker = "agent" if sender == self._heard.agent_identity else "user"
        # Read after the stream ended: LiveKit's agents send the final flag in the trailer,
        # which the reader merges into the stream's attributes.
        attrs = reader.info.attributes or attrs
        final = attrs.get(ATTR_TRANSCRIPTION_FINAL) == "true"
        entry = self._heard.captions.setdefault(segment, {"speaker": speaker, "text": ""})
        if entry.get("final") and not final:
            return  # an interim version that arrived after the final one
        entry["text"] = text
        entry["final"] = final

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _hang_up(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._room.disconnect()
