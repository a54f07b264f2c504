"""Turn-taking quality: false cut-offs, end-of-turn delay and backchannel interruptions.

Utterances spoken by Piper (the packaged voice) and espeak-ng, 16 kHz: complete questions;
sentences with a 0.6-1.2 s pause in the middle; numbers and lists read with pauses; and
backchannels said over the agent ("mm-hm", "uh-huh", "yeah yeah", "okay, got it", "oh okay"...)
and real interruptions beside them ("wait, stop", "hold on a second", "stop"...). Each plays
through the call's own parts: the listener (Silero VAD in 64 ms frames), the turn-taking
machine and the turn detector, in virtual time. The speculative transcripts and the backchannel
judgements are real: local Whisper (faster-whisper base, int8) transcribes them, and its
measured wall time is added to the virtual clock, so a slow transcription delays the decision
as it would on a call.

Configurations: "silence" is the detector of old (the VAD ends an utterance after 500 ms of
silence; no speculation; speech over the agent past 400 ms interrupts it); "shipped
(transcript)" is the default: the words' rules (a 120 ms pause, speculation, a 250 ms commit
silence under complete words, words without a final mark read as unfinished, a statement whose
pitch did not fall at the end waiting 1 s, complete words Whisper scored below 0.6 or ending
in a word or phrase said three times read as unfinished, a 500 ms fallback and 1.5 s for
unfinished words, backchannels judged up to 1200 ms); rows "without" a rule measure what that
rule holds.

With the Smart Turn model fetched (`voice-agent fetch-turn-model`), the acoustic ones run too:
"smart_turn" (the model alone) and "hybrid" (the words and the model, 1.5 s when they
disagree, the option with the fewest cut-offs; a 700 ms variant beside it), the model started
at the pause while the words are transcribed; its wall time per decision is added to the clock
and printed.

Figures: false cut-off rate (a turn committed before the caller finished), the median end-of-turn
delay on complete utterances (end of voiced speech to the commit), false interruptions
(backchannels that stopped the agent), real interruptions missed and how long one takes from
its onset to the reply's cancellation (`InterruptAgent`; the agent is silent from the onset
on, paused), and wasted speculations per
turn with the extra STT audio they cost. Printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from voice_agent.agent.listener import FRAME_MS, SAMPLE_RATE, Listener  # noqa: E402
from voice_agent.agent.turn_taking import (  # noqa: E402
    CommitTurn,
    DecideTurn,
    DiscardSpeculation,
    InterruptAgent,
    JudgeBackchannel,
    ResumeAgent,
    Speculate,
    Speculation,
    TurnTaking,
)
from voice_agent.caller.audio import ROOM_RATE, synthesize  # noqa: E402
from voice_agent.caller.audio import resample as resample_pcm  # noqa: E402
from voice_agent.pipeline.acoustic_turn import (  # noqa: E402
    HybridTurnDetector,
    SmartTurnDetector,
)
from voice_agent.pipeline.completeness import TranscriptTurnDetector  # noqa: E402
from voice_agent.pipeline.resample import StreamResampler  # noqa: E402
from voice_agent.pipeline.smart_turn import SmartTurnModels  # noqa: E402
from voice_agent.pipeline.smart_turn_weights import model_path  # noqa: E402
from voice_agent.pipeline.turn import (  # noqa: E402
    SilenceTurnDetector,
    TurnDecision,
    TurnDetector,
    listen_ahead,
    reads_transcript,
)
from voice_agent.pipeline.vad_model import SileroVadModel  # noqa: E402
from voice_agent.providers.base import PcmAudio  # noqa: E402
from voice_agent.providers.local_stt import LocalWhisperSTT  # noqa: E402
from voice_agent.providers.local_tts import PiperTTS  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

COMPLETE = [
    "What are your opening hours?",
    "Can I change my delivery address?",
    "I would like to cancel my subscription.",
    "How much does the premium plan cost?",
    "Is the store open on Sunday?",
    "Please send me a copy of my last invoice.",
    "Where is my order?",
    "Thank you, that is all I needed.",
]
PAUSED = [  # (before the pause, after it, pause seconds)
    ("I would like to book a table for", "four people tomorrow evening.", 0.6),
    ("My account number is", "four five six seven.", 0.8),
    ("Can you tell me whether the", "blue jacket is still in stock?", 1.0),
    ("I was wondering if", "you could move my appointment to Friday.", 1.2),
    ("The problem started when I", "updated the app last week.", 0.7),
    ("I need to speak to someone about", "a refund for my order.", 0.9),
]
NUMBERS = [  # parts read with pauses
    (["My phone number is", "five five five", "zero one three four."], 0.7),
    (["The code is", "four", "seven", "two", "nine."], 0.6),
    (["I need eggs,", "milk,", "bread and butter."], 0.8),
    (["My order number is", "one two three", "four five six."], 0.9),
]
BACKCHANNELS = [
    "Mm-hm.",
    "Yeah.",
    "Okay.",
    "Right.",
    "Uh-huh.",
    "Yeah, yeah.",
    "Okay, got it.",
    "I see.",
    "Sure.",
    "Mm.",
    "Right, right.",
    "Oh, okay.",
    "Yeah yeah yeah.",
    "Okay, right.",
]
INTERRUPTIONS = [
    "Wait, stop please.",
    "No, that is not what I asked.",
    "Wait, stop.",
    "Hold on a second.",
    "No, that's wrong.",
    "Actually, I have a question.",
    "Sorry, can you repeat that?",
    "Stop.",
]
SPEECH_START_S = 0.3  # each case's speech starts after this much silence
TAIL_S = 2.5  # silence after the last words, so every turn ends
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2


@dataclass(frozen=True)
class Case:
    kind: str  # complete, paused, numbers, backchannel, interruption
    voice: str
    label: str
    pcm: bytes  # 16 kHz mono int16, with the tail
    speech_ends: list[float]  # end of each voiced part, seconds into pcm
    resumes: list[float]  # where each later part starts


@dataclass(frozen=True)
class Config:
    name: str
    pause_ms: int
    detector: Callable[[], TurnDetector]
    speculation: Speculation
    backchannel_max_ms: int | None
    resume_after_ms: int
    stt_s: float | None = None  # a fixed transcription time instead of Whisper's wall time


def shipped(
    name: str,
    *,
    stt_s: float | None = None,
    punctuated: bool = True,
    pitch: bool = True,
    confidence: bool = True,
) -> Config:
    """The words' rules with the shipped timing: a 120 ms pause, a 250 ms commit silence under
    complete words, words without a final mark read as unfinished, a statement whose voice did
    not fall waiting 1 s (`pitch`), complete words Whisper scored below 0.6 read as unfinished
    (`confidence`), speculation, backchannels judged up to 1200 ms (`stt_s`: a fixed
    transcription time)."""
    return Config(
        name,
        120,
        lambda: TranscriptTurnDetector(
            silence_ms=500,
            incomplete_silence_ms=1500,
            complete_silence_ms=250,
            punctuated=punctuated,
            level_pitch_silence_ms=1000 if pitch else None,
            min_confidence=0.6 if confidence else 0.0,
        ),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        380,
        stt_s=stt_s,
    )


CONFIGS = [
    Config("silence", 500, lambda: SilenceTurnDetector(min_silence_ms=500), Speculation(), None, 0),
    shipped("shipped (transcript)"),  # the words' rules: a 120 ms pause, a 250 ms commit silence
    # timed as the side-by-side's scripted STT:
    shipped("shipped (transcript), STT 120 ms", stt_s=0.12),
    shipped("transcript without the pitch rule", pitch=False),
    shipped("transcript without the pitch rule, STT 120 ms", stt_s=0.12, pitch=False),
    shipped("transcript without the confidence rule", confidence=False),
    shipped("transcript without the pitch and confidence rules", pitch=False, confidence=False),
    shipped("transcript without the punctuation rule, STT 120 ms", stt_s=0.12, punctuated=False),
    Config(  # the defaults before: a 200 ms pause, complete words end the turn at once
        "200 ms pause, no commit silence, STT 120 ms",
        200,
        lambda: TranscriptTurnDetector(silence_ms=500, incomplete_silence_ms=1500),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        300,
        stt_s=0.12,
    ),
]


class TimedModel:
    """The Smart Turn model, timing each decision it is asked for (wall time, on this machine)."""

    def __init__(self) -> None:
        self.models = SmartTurnModels(model_path(Settings(_env_file=None)))
        self.costs_s: list[float] = []

    async def end_probability(self, pcm: bytes) -> float:
        started = time.perf_counter()
        p = await self.models.end_probability(pcm)
        self.costs_s.append(time.perf_counter() - started)
        return p


TURN_MODEL = TimedModel()


def hybrid(unsure_ms: int) -> Callable[[], TurnDetector]:
    """The hybrid detector on the timed model, waiting `unsure_ms` when words and sound disagree;
    the shipped rules' commit silence and punctuation."""
    return lambda: HybridTurnDetector(
        model=TURN_MODEL,
        threshold=0.5,
        silence_ms=500,
        incomplete_silence_ms=1500,
        unsure_silence_ms=unsure_ms,
        complete_silence_ms=250,
        punctuated=True,
        min_confidence=0.6,
    )


CONFIGS += [
    Config(  # Smart Turn v3.2 alone: P(end) >= 0.5 ends the turn, else 1.5 s of silence
        "smart_turn",
        120,
        lambda: SmartTurnDetector(
            model=TURN_MODEL, threshold=0.5, silence_ms=500, incomplete_silence_ms=1500
        ),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        380,
    ),
    Config(  # the transcript rules and Smart Turn: both complete ends now, disagreeing 700 ms
        "hybrid, unsure 700 ms",
        120,
        hybrid(700),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        380,
    ),
    Config(  # hybrid waiting as long on disagreement as on unfinished words (1.5 s)
        "hybrid, unsure 1.5 s",
        120,
        hybrid(1500),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        380,
    ),
    Config(  # the same, timed as the side-by-side's scripted STT (120 ms)
        "hybrid, unsure 1.5 s, STT 120 ms",
        120,
        hybrid(1500),
        Speculation(max_per_turn=3, max_wasted_per_call=50),
        1200,
        380,
        stt_s=0.12,
    ),
]
ACOUSTIC = {c.name for c in CONFIGS if "smart_turn" in c.name or "hybrid" in c.name}
"""The configurations that need the Smart Turn model."""


@dataclass
class Outcome:
    commits: list[float] = field(default_factory=list)
    committed_words: list[str] = field(default_factory=list)  # the speculative words, if known
    interrupted: bool = False
    interrupted_at: float | None = None  # virtual time of the first InterruptAgent
    resumed: bool = False
    speculations: int = 0
    wasted: int = 0
    stt_audio_s: float = 0.0
    stt_wall_s: list[float] = field(default_factory=list)


def _heard(known: tuple[float, str | None, float | None] | None) -> str:
    """The speculative words a commit carried, with Whisper's confidence in them."""
    if known is None:
        return "?"
    _, text, confidence = known
    return f"{text or ''} ({confidence:.2f})" if confidence is not None else (text or "")


def voiced_end(pcm: bytes) -> float:
    """Seconds to the end of the last voiced 10 ms window (within 35 dB of the peak)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    window = SAMPLE_RATE // 100
    n = samples.size // window
    power = np.mean(samples[: n * window].reshape(n, window) ** 2, axis=1) + 1e-9
    dbfs = 10 * np.log10(power / 32768.0**2)
    voiced = np.flatnonzero(dbfs > max(-50.0, float(dbfs.max()) - 35.0))
    return 0.0 if voiced.size == 0 else (int(voiced[-1]) + 1) * window / SAMPLE_RATE


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(SAMPLE_RATE * seconds)


class Voices:
    """Speech for a text from Piper or espeak-ng, 16 kHz, cut to its voiced part."""

    def __init__(self, piper: PiperTTS) -> None:
        self._piper = piper

    async def say(self, voice: str, text: str) -> bytes:
        if voice == "espeak":
            pcm = resample_pcm((await synthesize(text)).pcm, ROOM_RATE, SAMPLE_RATE)
        else:
            resampler: StreamResampler | None = None
            parts = []
            async for chunk in self._piper.synthesize(text):
                if resampler is None:
                    resampler = StreamResampler(input_rate=chunk.sample_rate, output_rate=16000)
                parts.append(resampler.push(chunk.data))
            assert resampler is not None
            parts.append(resampler.flush())
            pcm = b"".join(parts)
        return pcm[: int(voiced_end(pcm) * SAMPLE_RATE) * 2]


async def build_cases(voices: Voices) -> list[Case]:
    cases: list[Case] = []
    for voice in ("piper", "espeak"):

        async def joined(
            kind: str, label: str, parts: list[str], pause_s: float, voice: str = voice
        ) -> Case:
            pcm, ends, resumes = b"", [], []
            for i, text in enumerate(parts):
                if i:
                    pcm += silence(pause_s)
                    resumes.append(len(pcm) / 2 / SAMPLE_RATE)
                pcm += await voices.say(voice, text)
                ends.append(len(pcm) / 2 / SAMPLE_RATE)
            start = SPEECH_START_S
            return Case(kind, voice, label, silence(start) + pcm + silence(TAIL_S),
                        [e + start for e in ends], [r + start for r in resumes])  # fmt: skip

        for text in COMPLETE:
            cases.append(await joined("complete", text, [text], 0))
        for head, tail, pause_s in PAUSED:
            cases.append(await joined("paused", f"{head} ... {tail}", [head, tail], pause_s))
        for parts, pause_s in NUMBERS:
            cases.append(await joined("numbers", " ... ".join(parts), parts, pause_s))
        for text in BACKCHANNELS:
            cases.append(await joined("backchannel", text, [text], 0))
        for text in INTERRUPTIONS:
            cases.append(await joined("interruption", text, [text], 0))
    return cases


class Simulation:
    """One case through listener, machine and detector in virtual time (see module docstring)."""

    def __init__(self, case: Case, config: Config, stt: LocalWhisperSTT) -> None:
        self.case, self.config, self.stt = case, config, stt
        self.detector = config.detector()
        self.machine: TurnTaking[str] = TurnTaking(
            min_interruption_ms=400,
            resume_after_ms=config.resume_after_ms,
            backchannel_max_ms=config.backchannel_max_ms,
            speculation=config.speculation,
        )
        self.over_agent = case.kind in ("backchannel", "interruption")
        self.listener = Listener(
            model=SileroVadModel(), pause_ms=config.pause_ms, agent_audible=lambda: self.over_agent
        )
        self.events: list[tuple[float, int, Callable[[], object]]] = []
        self.order = itertools.count()
        self.transcripts: dict[int, tuple[float, str | None, float | None]] = {}
        self.outcome = Outcome()
        self.now = 0.0

    def at(self, when: float, action: Callable[[], object]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    async def transcribe(self, pcm: bytes) -> tuple[float, str | None, float | None]:
        started = time.perf_counter()
        heard = await self.stt.transcribe(PcmAudio(pcm, SAMPLE_RATE), language="en")
        spent = time.perf_counter() - started
        self.outcome.stt_audio_s += len(pcm) / 2 / SAMPLE_RATE
        self.outcome.stt_wall_s.append(spent)
        if self.config.stt_s is not None:
            spent = self.config.stt_s
        return spent, heard.text.strip(), heard.confidence

    async def act(self, actions: list[object]) -> None:
        # The session registers a speculation before its question's task first runs.
        actions = sorted(actions, key=lambda a: not isinstance(a, Speculate))
        for action in actions:
            if isinstance(action, Speculate):
                self.outcome.speculations += 1
                spent, text, confidence = await self.transcribe(action.turn.audio)
                self.transcripts[action.key] = (self.now + spent, text, confidence)
            elif isinstance(action, DiscardSpeculation) and action.wasted:
                self.outcome.wasted += 1
            elif isinstance(action, DecideTurn):
                await self.ask(action)
            elif isinstance(action, CommitTurn):
                self.outcome.commits.append(self.now)
                known = self.transcripts.get(action.speculation or -1)
                self.outcome.committed_words.append(_heard(known))
            elif isinstance(action, JudgeBackchannel):
                spent, text, _ = await self.transcribe(action.audio)
                self.at(self.now + spent, self._heard_back(text, action.ask))
            elif isinstance(action, InterruptAgent):
                if not self.outcome.interrupted:
                    self.outcome.interrupted_at = self.now
                self.outcome.interrupted = True
            elif isinstance(action, ResumeAgent):
                self.outcome.resumed = True
        deadline = self.machine.next_deadline
        if deadline is not None:
            self.at(deadline, lambda: self.machine.tick(at=self.now))

    def _heard_back(self, text: str | None, ask: int) -> Callable[[], object]:
        return lambda: self.machine.backchannel_heard(text, ask=ask, at=self.now)

    async def ask(self, action: DecideTurn) -> None:
        evidence, when = action.evidence, self.now
        known = self.transcripts.get(action.ask)
        if known is not None and reads_transcript(self.detector):
            ahead = listen_ahead(self.detector, evidence.audio)  # the model, while STT runs
            if ahead is not None:
                started = time.perf_counter()
                await ahead
                when += time.perf_counter() - started
            when = max(when, known[0])
            evidence = type(evidence)(
                transcript=known[1] or "",
                transcript_confidence=known[2],
                trailing_silence_s=evidence.trailing_silence_s + when - self.now,
                audio=evidence.audio,
            )
        started = time.perf_counter()
        decision: TurnDecision = await self.detector.decide(evidence)
        when += time.perf_counter() - started  # a model's time (the rules take microseconds)
        ask = action.ask
        self.at(when, lambda: self.machine.turn_decided(decision, ask=ask, at=self.now))

    async def run(self) -> Outcome:
        if self.over_agent:
            self.machine.reply_started("answer", at=0.0)
            self.machine.reply_audible("answer", at=0.0)
        pcm = self.case.pcm
        for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            arrival = (i + FRAME_BYTES) / 2 / SAMPLE_RATE
            await self.until(arrival)
            self.now = arrival
            for heard in self.listener.push(pcm[i : i + FRAME_BYTES], at=arrival):
                await self.act(list(self.machine.hear(heard)))
        await self.until(float("inf"))
        return self.outcome

    async def until(self, when: float) -> None:
        while self.events and self.events[0][0] <= when:
            at, _, action = heapq.heappop(self.events)
            self.now = max(self.now, at)
            result = action()
            if isinstance(result, list):
                await self.act(result)


@dataclass
class Figures:
    cut_offs: int = 0
    turns: int = 0
    complete_delays: list[float] = field(default_factory=list)
    all_delays: list[float] = field(default_factory=list)
    backchannels: int = 0
    false_interruptions: int = 0
    interruptions: int = 0
    missed_interruptions: int = 0
    interruption_delays: list[float] = field(default_factory=list)  # onset to InterruptAgent
    speculations: int = 0
    wasted: int = 0
    stt_audio_s: float = 0.0
    stt_wall_s: list[float] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # each cut-off: voice, case and words heard


def judge(case: Case, outcome: Outcome, figures: Figures) -> None:
    figures.speculations += outcome.speculations
    figures.wasted += outcome.wasted
    figures.stt_audio_s += outcome.stt_audio_s
    figures.stt_wall_s += outcome.stt_wall_s
    if case.kind == "backchannel":
        figures.backchannels += 1
        figures.false_interruptions += outcome.interrupted
        return
    if case.kind == "interruption":
        figures.interruptions += 1
        figures.missed_interruptions += not outcome.interrupted
        if outcome.interrupted_at is not None:
            figures.interruption_delays.append(outcome.interrupted_at - SPEECH_START_S)
        return
    figures.turns += 1
    end = case.speech_ends[-1]
    first = outcome.commits[0] if outcome.commits else None
    if first is None or first < end or len(outcome.commits) > 1:
        figures.cut_offs += 1  # committed before the caller finished (or split in two)
        heard = " | ".join(outcome.committed_words) or "no commit"
        figures.cut.append(f"{case.voice}: {case.label!r} committed as {heard!r}")
    elif first is not None:
        figures.all_delays.append(first - end)
        if case.kind == "complete":
            figures.complete_delays.append(first - end)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"


def max_ms(values: list[float]) -> str:
    return f"{max(values) * 1000:.0f}" if values else "-"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    settings = Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp(prefix="turn-bench-")))
    stt = LocalWhisperSTT.from_settings(settings)
    voices = Voices(PiperTTS.from_settings(settings))
    cases = await build_cases(voices)
    await stt.transcribe(PcmAudio(cases[0].pcm, SAMPLE_RATE), language="en")  # warm up
    kinds = {k: sum(c.kind == k for c in cases) for k in dict.fromkeys(c.kind for c in cases)}
    print(f"{len(cases)} utterances: {kinds}")
    results: dict[str, Figures] = {}
    configs = CONFIGS
    if not TURN_MODEL.models.available:
        print(f"no Smart Turn model at {TURN_MODEL.models.path} (voice-agent fetch-turn-model)")
        configs = [c for c in CONFIGS if c.name not in ACOUSTIC]
    else:
        await TURN_MODEL.models.load()  # and warm up, as the worker does at start
    for config in configs:
        figures = results[config.name] = Figures()
        for case in cases:
            outcome = await Simulation(case, config, stt).run()
            judge(case, outcome, figures)
        print(f"  {config.name}: done")
    rows = []
    for name, f in results.items():
        turns = max(f.turns, 1)
        rows.append(
            f"| {name} | {f.turns} | {f.cut_offs} ({100 * f.cut_offs / turns:.1f} %) "
            f"| {median_ms(f.complete_delays)} | {median_ms(f.all_delays)} "
            f"| {f.false_interruptions}/{f.backchannels} "
            f"({100 * f.false_interruptions / max(f.backchannels, 1):.0f} %) "
            f"| {f.missed_interruptions}/{f.interruptions} "
            f"| {median_ms(f.interruption_delays)} / {max_ms(f.interruption_delays)} "
            f"| {f.speculations / turns:.2f} | {f.wasted / turns:.2f} "
            f"| {f.stt_audio_s / turns:.2f} | {median_ms(f.stt_wall_s)} |"
        )
    table = "\n".join(
        [
            "| detector | turns | false cut-offs | median EOU delay, complete ms "
            "| median EOU delay, all ms | backchannels that interrupted | real interruptions "
            "missed | interruption onset to cancel ms, median / max "
            "| speculations / turn | wasted / turn | STT audio s / turn | STT wall ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    costs = sorted(TURN_MODEL.costs_s)
    model_cost = (
        f"Smart Turn v3.2 per decision (features and model, one onnxruntime thread, wall time): "
        f"median {median_ms(costs)} ms, p95 {costs[int(0.95 * (len(costs) - 1))] * 1000:.0f} ms "
        f"over {len(costs)} decisions; added to the virtual clock."
        if costs
        else ""
    )
    print(table)
    print(model_cost)
    for name, f in results.items():
        for cut in f.cut:
            print(f"  cut-off, {name}: {cut}")
    if not args.no_docs:
        write_section(
            "Turn taking",
            f"`benchmarks/turn_taking.py`: {len(cases)} utterances ({kinds}), half by Piper's "
            "packaged voice, half by espeak-ng, through the listener (Silero VAD), the "
            "turn-taking machine and the detector in virtual time; speculative transcripts and "
            "backchannel judgements by local Whisper base, its wall time added to the clock. "
            "A false cut-off is a turn committed before its last words (or split in two); the "
            "EOU delay runs from the end of voiced speech to the commit. Targets (issue 14): "
            "false cut-offs at most 5 %, median EOU delay on complete utterances at most "
            "300 ms, backchannel interruptions at most 10 %. On a shared machine: Whisper's "
            "wall time, and so the shipped delays, grow with the load.",
            table + ("\n\n" + model_cost if model_cost else ""),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
