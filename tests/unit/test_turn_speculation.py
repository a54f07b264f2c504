"""Turn taking in virtual time: speculation at the pause, and backchannels over the agent."""

from __future__ import annotations

import pytest

from tests.unit.test_turn_taking import END, Call, Reply, asked
from voice_agent.agent.backchannel import (
    interrupts,
    is_backchannel,
    normalise_words,
    sounds_like_hum,
)
from voice_agent.agent.turn_taking import (
    Action,
    AnswerTurn,
    CommitTurn,
    DecideTurn,
    DiscardSpeculation,
    Floor,
    IgnoreTurn,
    InterruptAgent,
    JudgeBackchannel,
    OnsetPending,
    PauseAgent,
    ResumeAgent,
    Speculate,
    Speculation,
    SpeechContinues,
    SpeechEnded,
    SpeechStarted,
    TurnTaking,
)
from voice_agent.pipeline.completeness import TranscriptTurnDetector
from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

WAIT = TurnDecision(end_of_turn=False, recheck_after_s=0.3, reason="silence_short")


def speculating(*, per_turn: int = 2, wasted: int = 10) -> Call:
    """A call whose machine speculates."""
    limits = Speculation(max_per_turn=per_turn, max_wasted_per_call=wasted)
    return Call(machine=TurnTaking(min_interruption_ms=400, speculation=limits))


def backchannelling(*, resume_after_ms: int = 300, backchannel_max_ms: int = 800) -> Call:
    """A call whose machine judges backchannels (up to `backchannel_max_ms`) over the agent."""
    machine: TurnTaking[Reply] = TurnTaking(
        min_interruption_ms=400,
        resume_after_ms=resume_after_ms,
        backchannel_max_ms=backchannel_max_ms,
    )
    return Call(machine=machine)


def speculated(actions: list[Action[Reply]]) -> Speculate:
    """The one Speculate among `actions`."""
    [speculate] = [a for a in actions if isinstance(a, Speculate)]
    return speculate


def utterance(
    call: Call, seconds: float, *, audio: bytes = b"x", agent_audible: bool
) -> list[Action[Reply]]:
    """The caller speaks `seconds` and the VAD ends it at a 0.2 s pause."""
    onset = call.now
    actions = call.machine.hear(
        SpeechStarted(at=call.now, onset_at=onset, agent_audible=agent_audible)
    )
    while call.now - onset < seconds:
        call.wait(0.064)
        actions += call.machine.hear(SpeechContinues(at=call.now, speech_s=call.now - onset))
    ended = call.now
    call.wait(0.2)
    actions += call.machine.hear(
        SpeechEnded(
            at=call.now,
            started_at=onset,
            ended_at=ended,
            speech_s=ended - onset,
            audio=audio,
            evidence=TurnEvidence(trailing_silence_s=0.2),
        )
    )
    return actions


def test_a_pause_speculates_on_the_turn_so_far() -> None:
    """The VAD's pause: DecideTurn and Speculate on the same held audio, keyed by the question."""
    call = speculating()
    actions = utterance(call, 0.8, audio=b"what time", agent_audible=False)
    speculate = speculated(actions)
    assert speculate.key == asked(actions).ask
    assert speculate.turn.audio == b"what time"


def test_the_commit_of_the_same_audio_carries_the_speculation() -> None:
    """The detector ends the turn with no new speech: the commit names the speculation."""
    call = speculating()
    actions = utterance(call, 0.8, agent_audible=False)
    [commit] = call.machine.turn_decided(END, ask=asked(actions).ask, at=call.now)
    assert isinstance(commit, CommitTurn)
    assert commit.speculation == speculated(actions).key
    assert call.machine.wasted == 0


def test_speaking_again_discards_the_speculation_as_wasted() -> None:
    """The caller resumes after the pause: DiscardSpeculation at the onset, counted wasted."""
    call = speculating()
    first = speculated(utterance(call, 0.8, agent_audible=False))
    call.wait(0.2)
    onset = call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert onset == [DiscardSpeculation(key=first.key, wasted=True)]
    assert call.machine.wasted == 1


def test_the_next_pause_speculates_on_both_utterances() -> None:
    """After a discarded speculation, the next pause speculates on the whole turn so far."""
    call = speculating()
    utterance(call, 0.8, audio=b"my number is ", agent_audible=False)
    call.wait(0.3)
    second = utterance(call, 0.8, audio=b"four five six", agent_audible=False)
    assert speculated(second).turn.audio == b"my number is four five six"
    [commit] = call.machine.turn_decided(END, ask=asked(second).ask, at=call.now)
    assert isinstance(commit, CommitTurn)
    assert commit.speculation == speculated(second).key


def test_a_recheck_commit_carries_the_speculation() -> None:
    """The silence detector's recheck commits the speculated audio: the speculation goes with it."""
    call = speculating()
    actions = utterance(call, 0.8, agent_audible=False)
    call.machine.turn_decided(WAIT, ask=asked(actions).ask, at=call.now)
    [commit] = call.machine.tick(at=call.now + 0.3)
    assert isinstance(commit, CommitTurn)
    assert commit.speculation == speculated(actions).key


def test_a_late_end_of_turn_while_the_caller_speaks_again_is_moot() -> None:
    """The detector answers (after waiting for words) once the caller has resumed: no commit;
    the utterance they are saying decides."""
    call = speculating()
    actions = utterance(call, 0.8, agent_audible=False)
    call.wait(0.4)
    call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert call.machine.turn_decided(END, ask=asked(actions).ask, at=call.now) == []
    assert call.machine.holding


def test_no_speculation_while_a_reply_runs() -> None:
    """A reply still running (thinking): the pause asks the detector but speculates nothing."""
    call = speculating()
    call.start_reply("answer", audible=False)
    actions = utterance(call, 0.8, agent_audible=False)
    assert [type(a) for a in actions] == [DecideTurn]


def test_past_the_per_turn_cap_a_pause_is_transcribed_without_a_reply() -> None:
    """At most max_per_turn speculations of a turn prepare a reply; later pauses of the same
    turn are still transcribed for the detector (prepare false); the cap starts again at the
    next turn."""
    call = speculating(per_turn=1)
    assert speculated(utterance(call, 0.5, agent_audible=False)).prepare
    call.wait(0.3)
    second = utterance(call, 0.5, agent_audible=False)
    assert not speculated(second).prepare
    call.wait(0.3)
    third = utterance(call, 0.5, agent_audible=False)
    assert not speculated(third).prepare
    assert (call.machine.speculations, call.machine.wasted) == (3, 2)
    [commit] = call.machine.turn_decided(END, ask=asked(third).ask, at=call.now)
    assert isinstance(commit, CommitTurn)
    assert commit.speculation == speculated(third).key
    call.wait(1.0)
    assert speculated(utterance(call, 0.5, agent_audible=False)).prepare


def test_no_speculation_at_all_when_the_per_turn_cap_is_zero() -> None:
    """max_per_turn 0 turns speculation off: the pause only asks the detector."""
    call = speculating(per_turn=0)
    assert [type(a) for a in utterance(call, 0.8, agent_audible=False)] == [DecideTurn]


def test_speculation_stops_once_the_call_has_wasted_its_cap() -> None:
    """After max_wasted_per_call wasted speculations, no more in this call."""
    call = speculating(per_turn=5, wasted=1)
    utterance(call, 0.5, agent_audible=False)
    call.wait(0.3)
    later = utterance(call, 0.5, agent_audible=False)  # its onset wasted the first
    assert call.machine.wasted == 1
    assert not any(isinstance(a, Speculate) for a in later)


def test_the_answer_carries_the_speculation_it_may_use() -> None:
    """Words and no reply running: AnswerTurn names the commit's speculation."""
    call = speculating()
    turn = call.decide(utterance(call, 0.8, agent_audible=False))
    actions = call.machine.transcribed(turn, "Hello?", at=call.now, speculation=3)
    assert actions == [AnswerTurn(turn=turn, text="Hello?", speculation=3)]


def test_an_empty_transcript_discards_the_speculation_unwasted() -> None:
    """No words: the speculation is discarded (nothing was prepared), and not counted wasted."""
    call = speculating()
    turn = call.decide(utterance(call, 0.8, agent_audible=False))
    actions = call.machine.transcribed(turn, "", at=call.now, speculation=3)
    assert actions == [DiscardSpeculation(key=3, wasted=False), IgnoreTurn(turn)]
    assert call.machine.wasted == 0


def test_a_reply_started_since_the_speculation_makes_it_stale() -> None:
    """A reply runs when the words arrive: the speculation is wasted, the answer starts anew."""
    call = speculating()
    turn = call.decide(utterance(call, 0.8, agent_audible=False))
    reply = call.start_reply("greeting", audible=True)
    actions = call.machine.transcribed(turn, "Hi", at=call.now, speculation=4)
    assert actions == [
        DiscardSpeculation(key=4),
        InterruptAgent(reply=reply),
        AnswerTurn(turn=turn, text="Hi", speculation=None),
    ]
    assert call.machine.wasted == 1


# Backchannels


def test_speech_past_the_threshold_over_the_agent_is_judged_not_interrupted() -> None:
    """0.6 s over the agent (past min_interruption_ms, short of backchannel_max_ms): no
    interruption; its end asks for a judgement with the audio."""
    call = backchannelling()
    call.start_reply("answer")
    actions = utterance(call, 0.6, audio=b"okay", agent_audible=True)
    assert isinstance(actions[0], PauseAgent)
    assert not any(isinstance(a, InterruptAgent) for a in actions)
    judge = actions[-1]
    assert isinstance(judge, JudgeBackchannel)
    assert judge.audio == b"okay"
    assert call.machine.floor is Floor.PAUSED


def test_an_acknowledgement_resumes_the_agent() -> None:
    """The judged words are a backchannel: ResumeAgent, no turn held."""
    call = backchannelling()
    call.start_reply("answer")
    judge = utterance(call, 0.6, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    [resume] = call.machine.backchannel_heard("Mm-hm.", ask=judge.ask, at=call.now)
    assert isinstance(resume, ResumeAgent)
    assert not call.machine.holding
    assert call.machine.floor is Floor.AGENT_SPEAKING


def test_other_words_interrupt_and_become_the_turn_with_their_transcript() -> None:
    """Judged words that are no backchannel: InterruptAgent, then the turn is held and its
    commit carries the transcript (no second transcription)."""
    call = backchannelling()
    reply = call.start_reply("answer")
    judge = utterance(call, 0.6, audio=b"wait", agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    actions = call.machine.backchannel_heard("Wait.", ask=judge.ask, at=call.now)
    assert actions[0] == InterruptAgent(reply=reply)
    decide = asked(actions)
    assert decide.evidence.transcript == "Wait."
    [commit] = call.machine.turn_decided(END, ask=decide.ask, at=call.now)
    assert isinstance(commit, CommitTurn)
    assert (commit.turn.audio, commit.transcript) == (b"wait", "Wait.")


def test_speech_as_long_as_backchannel_max_interrupts_at_once() -> None:
    """Speech over the agent reaching backchannel_max_ms is an interruption, without waiting."""
    call = backchannelling()
    reply = call.start_reply("answer")
    call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=True))
    before = call.machine.hear(SpeechContinues(at=call.now, speech_s=0.79))
    at = call.machine.hear(SpeechContinues(at=call.now, speech_s=0.80))
    assert (before, at) == ([], [InterruptAgent(reply=reply)])


def test_a_cough_resumes_only_after_resume_after_ms() -> None:
    """Short sound over the agent: judged (it could be "stop"); with no interrupting word,
    ResumeAgent once resume_after_ms more silence has passed."""
    call = backchannelling(resume_after_ms=300)
    call.start_reply("answer")
    actions = utterance(call, 0.2, agent_audible=True)
    assert not any(isinstance(a, ResumeAgent) for a in actions)
    judge = actions[-1]
    assert isinstance(judge, JudgeBackchannel)
    assert call.machine.next_deadline is None  # not before its words are known
    assert call.machine.backchannel_heard("", ask=judge.ask, at=call.now + 0.1) == []
    assert call.machine.next_deadline == pytest.approx(call.now + 0.3)
    assert call.machine.tick(at=call.now + 0.29) == []
    [resume] = call.machine.tick(at=call.now + 0.3)
    assert isinstance(resume, ResumeAgent)


def test_a_cough_judged_after_its_silence_resumes_at_once() -> None:
    """The words of a short sound come after resume_after_ms: the agent resumes with them."""
    call = backchannelling(resume_after_ms=300)
    call.start_reply("answer")
    judge = utterance(call, 0.2, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    assert call.machine.tick(at=call.now + 0.5) == []  # still judging: stays paused
    assert call.machine.next_deadline is None
    [resume] = call.machine.backchannel_heard("you", ask=judge.ask, at=call.now + 0.6)
    assert isinstance(resume, ResumeAgent)
    assert call.machine.floor is Floor.AGENT_SPEAKING


@pytest.mark.parametrize("text", ["Stop.", "No.", "Wait!", "Sorry?", "Hold on."])
def test_a_short_interrupting_word_interrupts(text: str) -> None:
    """Under min_interruption_ms, an interrupting word still stops the agent and is the turn."""
    call = backchannelling()
    reply = call.start_reply("answer")
    judge = utterance(call, 0.3, audio=b"stop", agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    actions = call.machine.backchannel_heard(text, ask=judge.ask, at=call.now)
    assert actions[0] == InterruptAgent(reply=reply)
    assert asked(actions).evidence.transcript == text
    assert call.machine.holding


def test_short_words_that_do_not_interrupt_resume() -> None:
    """Under min_interruption_ms, words without an interrupting one are no turn."""
    call = backchannelling(resume_after_ms=0)
    call.start_reply("answer")
    judge = utterance(call, 0.3, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    [resume] = call.machine.backchannel_heard("Thank you.", ask=judge.ask, at=call.now)
    assert isinstance(resume, ResumeAgent)
    assert not call.machine.holding


@pytest.mark.parametrize(("text", "seconds"), [("and the macen.", 0.7), ("M.M.A.C.M.", 0.7)])
def test_a_misheard_hum_resumes(text: str, seconds: float) -> None:
    """Words neither acknowledging nor interrupting, short and few: a misheard hum resumes."""
    call = backchannelling()
    call.start_reply("answer")
    judge = utterance(call, seconds, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    [resume] = call.machine.backchannel_heard(text, ask=judge.ask, at=call.now)
    assert isinstance(resume, ResumeAgent)


def test_the_same_words_spoken_longer_interrupt() -> None:
    """The hum rule holds only for short speech: 0.9 s of unknown words is a turn."""
    call = backchannelling(backchannel_max_ms=1200)
    reply = call.start_reply("answer")
    judge = utterance(call, 0.95, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    actions = call.machine.backchannel_heard("the blue one", ask=judge.ask, at=call.now)
    assert actions[0] == InterruptAgent(reply=reply)


def test_more_than_three_unknown_words_interrupt_even_when_short() -> None:
    """Four words that are neither acknowledgement nor interruption: no hum, a turn."""
    call = backchannelling()
    reply = call.start_reply("answer")
    judge = utterance(call, 0.6, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    actions = call.machine.backchannel_heard("I like the blue", ask=judge.ask, at=call.now)
    assert actions[0] == InterruptAgent(reply=reply)


def test_speech_during_the_wait_adds_up_to_an_interruption() -> None:
    """Two bursts over the agent split by a short pause count together toward the threshold."""
    call = backchannelling()
    reply = call.start_reply("answer")
    utterance(call, 0.3, agent_audible=True)
    call.wait(0.1)
    actions = utterance(call, 0.6, agent_audible=True)  # 0.32 + 0.64 > 0.8
    assert InterruptAgent(reply=reply) in actions


def test_a_judgement_overtaken_by_more_speech_is_moot() -> None:
    """The caller spoke again while the backchannel was judged: that verdict changes nothing."""
    call = backchannelling()
    call.start_reply("answer")
    judge = utterance(call, 0.5, agent_audible=True)[-1]
    assert isinstance(judge, JudgeBackchannel)
    call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert call.machine.backchannel_heard("yeah", ask=judge.ask, at=call.now) == []
    assert call.machine.floor is Floor.PAUSED


@pytest.mark.parametrize(
    "text",
    [
        "Mm-hm.", "yeah", "Okay.", "Right.", "uh-huh", "I see.", "Okay, right.",
        # spellings
        "mhm", "Mm-hmm.", "mmhm", "Hmm.", "MM", "M.M.", "uh huh", "Uhhuh.", "okey", "O.K.",
        "Ok.", "okey dokey", "yea", "Yep.", "alright", "All right.", "gotcha",
        # repeats and up to four acknowledgements
        "Yeah, yeah, yeah.", "yeah yeah yeah yeah yeah", "Right, right.", "okay okay",
        "Okay, got it.", "Yeah, I see, sure, thanks.",
        # a leading conjunction or interjection
        "And yeah.", "Oh, okay.", "So, right.", "Well, okay.", "Oh I see.",
        # other acknowledgements
        "Sure.", "Sounds good.", "Makes sense.", "Fair enough.", "That's right.", "Thank you.",
        "Hmm?", "Okay?", "That's fine.", "Okay, it's right.", "Sounds great.", "Very good.",
        "HMMHM", "Mmkay.", "Hm-hmm.", "No problem.", "Sure thing.", "I got it.",
        "Yeah, that makes sense.", "Uh-huh, uh-huh.",
    ],
)  # fmt: skip
def test_acknowledgements_are_backchannels(text: str) -> None:
    """Acknowledgements, however Whisper spells them, count as backchannels."""
    assert is_backchannel(text)
    assert not interrupts(text)


@pytest.mark.parametrize(
    "text", ["Wait.", "No, stop.", "Okay, but what about Saturday?", "", "I", "Right now please"]
)
def test_requests_are_not_backchannels(text: str) -> None:
    """Words asking for something, and nothing at all, are no backchannel."""
    assert not is_backchannel(text)


async def test_a_comma_pause_shorter_than_the_commit_silence_does_not_end_the_turn() -> None:
    """A 120 ms pause whose speculative words already read complete ("Yes, please."): the
    transcript detector waits out the commit silence, the caller goes on within it, and nothing
    is committed; the speculation is wasted and the next pause decides."""
    detector = TranscriptTurnDetector(complete_silence_ms=200)
    call = speculating()
    actions = utterance(call, 0.6, audio=b"yes ", agent_audible=False)
    decision = await detector.decide(
        TurnEvidence(transcript="Yes, please.", trailing_silence_s=0.12)
    )
    assert call.machine.turn_decided(decision, ask=asked(actions).ask, at=call.now) == []
    deadline = call.machine.next_deadline
    assert deadline is not None
    assert deadline == pytest.approx(call.now + 0.08)
    call.wait(0.05)  # the caller goes on before the commit silence is over
    onset = call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert onset == [DiscardSpeculation(key=speculated(actions).key, wasted=True)]
    assert call.machine.tick(at=deadline + 0.01) == []
    assert call.machine.holding


def test_a_recheck_due_while_an_onset_is_pending_waits_for_the_onset() -> None:
    """The caller resumes after a pause: their voice is heard before the VAD confirms it as speech.
    A recheck falling due in between commits nothing; the confirmed onset then discards the
    speculation and the turn goes on."""
    call = speculating()
    actions = utterance(call, 0.8, agent_audible=False)
    call.machine.turn_decided(WAIT, ask=asked(actions).ask, at=call.now)
    deadline = call.machine.next_deadline
    assert deadline is not None
    call.wait(0.2)
    assert call.machine.hear(OnsetPending(at=call.now, pending=True)) == []
    assert call.machine.next_deadline is None  # the onset decides, not the clock
    assert call.machine.tick(at=deadline + 0.05) == []
    onset = call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
    assert onset == [DiscardSpeculation(key=speculated(actions).key, wasted=True)]
    assert call.machine.holding


def test_voice_that_fades_without_becoming_speech_lets_the_due_commit_happen() -> None:
    """A breath or a click (voice, never speech): once it fades, the recheck that fell due while
    it lasted commits the turn at once, with its speculation."""
    call = speculating()
    actions = utterance(call, 0.8, agent_audible=False)
    call.machine.turn_decided(WAIT, ask=asked(actions).ask, at=call.now)
    deadline = call.machine.next_deadline
    assert deadline is not None
    call.machine.hear(OnsetPending(at=call.now, pending=True))
    assert call.machine.tick(at=deadline + 0.05) == []
    [commit] = call.machine.hear(OnsetPending(at=deadline + 0.1, pending=False))
    assert isinstance(commit, CommitTurn)
    assert commit.speculation == speculated(actions).key


def test_an_end_of_turn_answered_while_an_onset_is_pending_is_held_until_it_fades() -> None:
    """The detector says "end of turn" while voice is pending: no commit yet; speech confirmed
    from it makes the answer moot, and voice that fades commits."""
    for becomes_speech in (True, False):
        call = speculating()
        actions = utterance(call, 0.8, agent_audible=False)
        call.machine.hear(OnsetPending(at=call.now, pending=True))
        assert call.machine.turn_decided(END, ask=asked(actions).ask, at=call.now) == []
        call.wait(0.1)
        if becomes_speech:
            call.machine.hear(SpeechStarted(at=call.now, onset_at=call.now, agent_audible=False))
            assert call.machine.hear(OnsetPending(at=call.now, pending=False)) == []
            assert call.machine.holding
        else:
            [commit] = call.machine.hear(OnsetPending(at=call.now, pending=False))
            assert isinstance(commit, CommitTurn)


def test_five_different_acknowledgements_are_too_many() -> None:
    """Past four acknowledgements (repeats folded) it is no longer a backchannel."""
    assert is_backchannel("okay, yeah, right, sure")
    assert not is_backchannel("okay, yeah, right, sure, great")


@pytest.mark.parametrize(
    "text",
    [
        "Stop.", "Wait.", "No.", "Nope.", "Sorry.", "Hold on.", "Hang on a second.",
        "Actually, I have a question.", "Excuse me.", "Sorry, can you repeat that?",
        "No, that's wrong.", "Yeah, but that's not it.", "Okay, wait.", "Yeah, no.",
        "What?", "Why?", "Really?", "Hello?", "One moment.", "That's not right.",
        "Okay, stop, stop.", "Mm, sorry, what?",
        "Hey.", "Never mind.", "Slow down.", "Go back.", "Can I ask something",
        "Could you speak up", "I don't understand.", "Right now please.",
    ],
)  # fmt: skip
def test_interrupting_words_interrupt_however_short(text: str) -> None:
    """These always ask for the floor, even alone or after an acknowledgement."""
    assert interrupts(text)
    assert not is_backchannel(text)


@pytest.mark.parametrize(
    ("text", "speech_ms", "hum"),
    [
        ("and the macen.", 740, True),
        ("M.M.A.C.M.", 860, True),
        ("Okay, cut it", 700, True),
        ("and the macen.", 950, False),  # as long as words: no hum
        ("the blue jacket please", 700, False),  # four words: no hum
        ("", 300, True),
    ],
)
def test_a_hum_is_short_and_few_words(text: str, speech_ms: float, hum: bool) -> None:
    """The misheard-hum rule: under 900 ms and at most three words (conjunctions aside)."""
    assert sounds_like_hum(text, speech_ms) is hum


def test_normalised_words_fold_spellings_phrases_and_repeats() -> None:
    """The normal form the rules read."""
    assert normalise_words("Mm-hmm, yeah yeah, got it!") == ["mm", "yeah", "got-it"]
    assert normalise_words("M.M.A.C.M.") == ["mmacm"]
    assert normalise_words("Uh huh, okey.") == ["uh-huh", "okay"]
    assert normalise_words("Okay, it's right.") == ["okay", "right"]
    assert normalise_words("It's the blue one") == ["it's", "the", "blue", "one"]
