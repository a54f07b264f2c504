"""Turn taking in virtual time: barge-in, resume, interruption, turn commits and what follows."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from voice_agent.agent.turn_taking import (
    Action,
    AnswerTurn,
    CallerTurn,
    CommitTurn,
    DecideTurn,
    Floor,
    IgnoreTurn,
    InterruptAgent,
    PauseAgent,
    RecoverTranscription,
    ResumeAgent,
    SayRest,
    SpeechContinues,
    SpeechEnded,
    SpeechStarted,
    TurnTaking,
)
from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

MIN_INTERRUPTION_MS = 400
END = TurnDecision(end_of_turn=True, reason="silence")


@dataclass(frozen=True)
class Reply:
    """A stand-in for the session's reply handle."""

    name: str


@dataclass
class Call:
    """A machine and a virtual clock; helpers speak for the caller and the agent."""

    machine: TurnTaking[Reply] = field(
        default_factory=lambda: TurnTaking(min_interruption_ms=MIN_INTERRUPTION_MS)
    )
    now: float = 100.0

    def wait(self, seconds: float) -> None:
        self.now += seconds

    def start_reply(self, name: str, *, audible: bool = True) -> Reply:
        reply = Reply(name)
        self.machine.reply_started(reply, at=self.now)
        if audible:
            self.machine.reply_audible(reply, at=self.now)
        return reply

    def speak(
        self, seconds: float, *, agent_audible: bool, audio: bytes = b"speech"
    ) -> list[Action[Reply]]:
        """The caller speaks for `seconds` (frames every 64 ms); every action on the way."""
        onset = self.now
        self.wait(0.096)  # the VAD's onset
        actions = self.machine.hear(
            SpeechStarted(at=self.now, onset_at=onset, agent_audible=agent_audible)
        )
        while self.now - onset < seconds:
            self.wait(0.064)
            actions += self.machine.hear(SpeechContinues(at=self.now, speech_s=self.now - onset))
        ended = self.now
        self.wait(0.5)  # the VAD's trailing silence
        evidence = TurnEvidence(trailing_silence_s=0.5)
        actions += self.machine.hear(
            SpeechEnded(
                at=self.now,
                started_at=onset,
                ended_at=ended,
                speech_s=ended - onset,
                audio=audio,
                evidence=evidence,
            )
        )
        return actions

    def decide(self, actions: list[Action[Reply]], decision: TurnDecision = END) -> CallerTurn:
        """Answer the last DecideTurn with `decision`; the committed turn."""
        [commit] = self.machine.turn_decided(decision, ask=asked(actions).ask, at=self.now)
        assert isinstance(commit, CommitTurn)
        return commit.turn


def asked(actions: list[Action[Reply]]) -> DecideTurn:
    """The one DecideTurn among `actions`."""
    [ask] = [a for a in actions if isinstance(a, DecideTurn)]
    return ask


def floor(call: Call) -> Floor:
    """Who has the floor now (a call, so each check reads it afresh)."""
    return call.machine.floor


def test_speech_over_the_audible_agent_pauses_it_at_once() -> None:
    """The caller's onset while the agent is heard: one PauseAgent, timed from the speech."""
    call = Call()
    call.start_reply("answer")
    onset = call.now
    call.wait(0.096)
    actions = call.machine.hear(SpeechStarted(at=call.now, onset_at=onset, agent_audible=True))
    assert actions == [PauseAgent(onset_to_stop_ms=96.0)]
    assert floor(call) is Floor.PAUSED


def test_speech_while_the_agent_is_silent_does_not_pause() -> None:
    """A reply still thinking (no sound yet) is not paused by the caller's speech."""
    call = Call()
    call.start_reply("answer", audible=False)
    actions = call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert actions == []
    assert floor(call) is Floor.CALLER_SPEAKING


def test_speech_past_the_interruption_threshold_interrupts_the_reply_once() -> None:
    """Paused speech reaching min_interruption_ms cancels the running reply, exactly once."""
    call = Call()
    reply = call.start_reply("long answer")
    actions = call.speak(1.5, agent_audible=True)
    interrupts = [a for a in actions if isinstance(a, InterruptAgent)]
    assert interrupts == [InterruptAgent(reply=reply)]
    assert isinstance(actions[0], PauseAgent)
    assert not any(isinstance(a, ResumeAgent) for a in actions)


def test_the_interruption_comes_when_the_threshold_is_reached() -> None:
    """Not a frame before min_interruption_ms of speech, and on the first frame past it."""
    call = Call()
    reply = call.start_reply("answer")
    call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=True))
    before = call.machine.hear(SpeechContinues(at=call.now, speech_s=0.399))
    at = call.machine.hear(SpeechContinues(at=call.now, speech_s=0.400))
    assert (before, at) == ([], [InterruptAgent(reply=reply)])
    assert floor(call) is Floor.INTERRUPTED


def test_short_speech_over_the_agent_resumes_it_and_is_no_turn() -> None:
    """A cough shorter than the threshold: ResumeAgent, and nothing goes to the turn detector."""
    call = Call()
    call.start_reply("answer")
    actions = call.speak(0.25, agent_audible=True)
    assert isinstance(actions[0], PauseAgent)
    resume = actions[-1]
    assert isinstance(resume, ResumeAgent)
    assert resume.speech_ms == pytest.approx(288, abs=1)
    assert not any(isinstance(a, (InterruptAgent, DecideTurn)) for a in actions)
    assert not call.machine.holding
    assert floor(call) is Floor.AGENT_SPEAKING


def test_speech_to_a_listening_agent_is_asked_about_then_committed() -> None:
    """Silence after speech: DecideTurn with the audio; end of turn commits it with its times."""
    call = Call()
    started = call.now
    actions = call.speak(1.0, agent_audible=False, audio=b"hello")
    assert len(actions) == 1
    assert asked(actions).evidence.audio == b"hello"
    turn = call.decide(actions)
    assert (turn.audio, turn.started_at, turn.committed_at) == (b"hello", started, call.now)
    assert turn.ended_at == pytest.approx(call.now - 0.5)
    assert not call.machine.holding


def test_a_turn_held_by_the_detector_joins_the_next_utterance() -> None:
    """A wait without recheck holds the speech; the next utterance is asked about with both."""
    call = Call()
    started = call.now
    ask = asked(call.speak(0.8, agent_audible=False, audio=b"my number is "))
    wait = TurnDecision(end_of_turn=False, reason="incomplete")
    assert call.machine.turn_decided(wait, ask=ask.ask, at=call.now) == []
    assert call.machine.holding
    call.wait(0.7)
    second = call.speak(0.6, agent_audible=False, audio=b"four five six")
    assert asked(second).evidence.audio == b"my number is four five six"
    turn = call.decide(second)
    assert (turn.audio, turn.started_at) == (b"my number is four five six", started)


def test_a_recheck_commits_when_its_silence_has_passed() -> None:
    """Wait with recheck_after_s: nothing before the deadline, CommitTurn at it."""
    call = Call()
    ask = asked(call.speak(0.8, agent_audible=False))
    wait = TurnDecision(end_of_turn=False, recheck_after_s=0.3, reason="silence_short")
    assert call.machine.turn_decided(wait, ask=ask.ask, at=call.now) == []
    assert call.machine.next_deadline == pytest.approx(call.now + 0.3)
    assert call.machine.tick(at=call.now + 0.29) == []
    [commit] = call.machine.tick(at=call.now + 0.3)
    assert isinstance(commit, CommitTurn)
    assert call.machine.next_deadline is None


def test_speaking_again_cancels_a_pending_recheck() -> None:
    """The caller resumes before the recheck: their next utterance decides, not the timer."""
    call = Call()
    ask = asked(call.speak(0.8, agent_audible=False))
    wait = TurnDecision(end_of_turn=False, recheck_after_s=0.3, reason="silence_short")
    call.machine.turn_decided(wait, ask=ask.ask, at=call.now)
    call.wait(0.1)
    call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert call.machine.next_deadline is None
    assert call.machine.tick(at=call.now + 1.0) == []


def test_an_answer_to_an_older_question_is_moot() -> None:
    """Two utterances asked about: the first question's late answer commits nothing."""
    call = Call()
    first = asked(call.speak(0.5, agent_audible=False))
    call.wait(0.2)
    second = asked(call.speak(0.5, agent_audible=False))
    assert call.machine.turn_decided(END, ask=first.ask, at=call.now) == []
    [commit] = call.machine.turn_decided(END, ask=second.ask, at=call.now)
    assert isinstance(commit, CommitTurn)


def test_words_while_a_reply_runs_interrupt_it_and_are_answered() -> None:
    """The caller spoke again while the agent was thinking: cancel that reply, answer this."""
    call = Call()
    turn = call.decide(call.speak(1.0, agent_audible=False))
    reply = call.start_reply("first answer", audible=False)
    actions = call.machine.transcribed(turn, "And on Saturdays?", at=call.now)
    assert actions == [InterruptAgent(reply=reply), AnswerTurn(turn=turn, text="And on Saturdays?")]


def test_words_to_a_listening_agent_are_answered() -> None:
    """No reply running: the transcript is answered, nothing is interrupted."""
    call = Call()
    turn = call.decide(call.speak(1.0, agent_audible=False))
    actions = call.machine.transcribed(turn, "What are your hours?", at=call.now)
    assert actions == [AnswerTurn(turn=turn, text="What are your hours?")]


def test_an_interruption_without_words_says_the_rest_of_the_cut_reply() -> None:
    """Interrupted by speech that transcribes to nothing: say what the caller did not hear."""
    call = Call()
    reply = call.start_reply("long answer")
    actions = call.speak(1.0, agent_audible=True)
    call.machine.reply_finished(reply, at=call.now)  # cancelled by the InterruptAgent
    turn = call.decide(actions)
    assert call.machine.transcribed(turn, "  ", at=call.now) == [SayRest(reply=reply)]
    assert floor(call) is Floor.LISTENING


def test_no_words_without_an_interruption_are_ignored() -> None:
    """Noise that reached STT but holds no words is no turn to answer."""
    call = Call()
    turn = call.decide(call.speak(1.0, agent_audible=False))
    assert call.machine.transcribed(turn, "", at=call.now) == [IgnoreTurn(turn)]


def test_a_failed_transcription_is_recovered_and_forgets_the_interruption() -> None:
    """STT failing: RecoverTranscription; a later empty turn does not say the cut reply's rest."""
    call = Call()
    reply = call.start_reply("long answer")
    turn = call.decide(call.speak(1.0, agent_audible=True))
    call.machine.reply_finished(reply, at=call.now)
    assert call.machine.transcribed(turn, None, at=call.now) == [RecoverTranscription(turn=turn)]
    later = call.decide(call.speak(1.0, agent_audible=False))
    assert call.machine.transcribed(later, "", at=call.now) == [IgnoreTurn(later)]


def test_a_reply_cut_by_an_answered_turn_is_not_said_again_later() -> None:
    """A reply cut by a new question (not a barge-in) is owed no rest on a later empty turn."""
    call = Call()
    turn = call.decide(call.speak(1.0, agent_audible=False))
    first = call.start_reply("first answer", audible=False)
    call.machine.transcribed(turn, "Actually, something else.", at=call.now)
    call.machine.reply_finished(first, at=call.now)
    second = call.start_reply("second answer")
    short = call.speak(0.2, agent_audible=True)
    assert isinstance(short[-1], ResumeAgent)
    call.machine.reply_finished(second, at=call.now)
    later = call.decide(call.speak(1.0, agent_audible=False))
    assert call.machine.transcribed(later, "", at=call.now) == [IgnoreTurn(later)]


def test_a_barge_in_over_a_fixed_line_stops_it_without_a_reply() -> None:
    """Paused over a line that is no reply: the interruption only stops the sound."""
    call = Call()
    actions = call.speak(1.0, agent_audible=True)
    assert InterruptAgent(reply=None) in actions
    turn = call.decide(actions)
    assert call.machine.transcribed(turn, "", at=call.now) == [IgnoreTurn(turn)]


def test_a_late_finish_of_an_older_reply_leaves_the_running_one() -> None:
    """reply_finished for a reply already replaced does not end the current one."""
    call = Call()
    old = call.start_reply("old")
    new = call.start_reply("new")
    call.machine.reply_finished(old, at=call.now)
    assert call.machine.reply == new
    assert floor(call) is Floor.AGENT_SPEAKING


def test_the_floor_follows_a_barge_in_from_start_to_answer() -> None:
    """The e2e barge-in, step by step: speaking, paused, interrupted, thinking about the answer."""
    call = Call()
    assert floor(call) is Floor.LISTENING
    answer = call.start_reply("long answer", audible=False)
    assert floor(call) is Floor.THINKING
    call.machine.reply_audible(answer, at=call.now)
    assert floor(call) is Floor.AGENT_SPEAKING
    floors = []
    onset = call.now
    call.wait(0.096)
    call.machine.hear(SpeechStarted(at=call.now, onset_at=onset, agent_audible=True))
    floors.append(call.machine.floor)
    call.wait(0.4)
    call.machine.hear(SpeechContinues(at=call.now, speech_s=call.now - onset))
    floors.append(call.machine.floor)
    call.machine.reply_finished(answer, at=call.now)
    assert floors == [Floor.PAUSED, Floor.INTERRUPTED]
    call.wait(0.5)
    evidence = TurnEvidence(trailing_silence_s=0.5)
    ask = call.machine.hear(
        SpeechEnded(
            at=call.now,
            started_at=onset,
            ended_at=call.now - 0.5,
            speech_s=0.5,
            audio=b"stop please",
            evidence=evidence,
        )
    )
    turn = call.decide(ask)
    assert call.machine.transcribed(turn, "Stop please", at=call.now) == [
        AnswerTurn(turn=turn, text="Stop please")
    ]
    call.start_reply("Sure, go ahead.", audible=False)
    assert floor(call) is Floor.THINKING
