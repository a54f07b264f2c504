"""The transcript turn detector: complete utterances end the turn, unfinished ones wait, and a
statement whose voice did not fall waits a little."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest

from voice_agent.pipeline import completeness, prosody
from voice_agent.pipeline.completeness import (
    TranscriptTurnDetector,
    looped,
    unlooped,
    utterance_complete,
)
from voice_agent.pipeline.prosody import SAMPLE_RATE
from voice_agent.pipeline.turn import TurnEvidence, close_detector, listen_ahead


@pytest.mark.parametrize(
    "text",
    [
        "What are your opening hours?",
        "I'd like to book a table for two.",
        "Thanks",
        "My number is 555 0134 6789, thanks.",
        "Four five six?",
    ],
)
def test_finished_sentences_are_complete(text: str) -> None:
    """Questions, statements and a number closed by more words read as finished."""
    assert utterance_complete(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "My account number is",
        "I'd like eggs, milk,",
        "I want to um",
        "Can you tell me about the",
        "My phone number is four five six.",
        "and then...",
        "The code is 4 5 6",
    ],
)
def test_unfinished_sentences_are_incomplete(text: str) -> None:
    """Trailing function words, fillers, commas and numbers being read out wait for more."""
    assert utterance_complete(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "Can you tell me whether that?",
        "Could you call me back when you?",
        "Can you tell me about the?",
        "Is it my?",
        "I'd like tea and?",
        "What if it!",
    ],
)
def test_a_sentence_that_broke_off_is_unfinished_under_a_question_mark(text: str) -> None:
    """An STT can hear a question in a sentence cut at its pause: an ending no sentence has (an
    article, a possessive, a conjunction) or a clause with its subject and no verb waits."""
    assert utterance_complete(text) is False
    assert utterance_complete(text, punctuated=True) is False


@pytest.mark.parametrize(
    "text",
    [
        "Can you help me?",
        "What is it made of?",
        "Who are you talking to?",
        "Is that it?",
        "Do you know if it is open?",
        "Tell me when you are free.",
        "What is that?",
        "Tea or coffee?",
        "Let me know if you can help.",
    ],
)
def test_questions_ending_on_a_pronoun_or_a_stranded_preposition_are_complete(text: str) -> None:
    """The broken-off rules leave finished questions alone: a pronoun object, a preposition
    left at the end, a clause that has its verb."""
    assert utterance_complete(text, punctuated=True) is True


@pytest.mark.parametrize(
    "text", ["I was wondering", "I need eggs", "my phone number is 5555", "Thank you"]
)
def test_a_punctuating_stt_without_a_final_mark_is_unfinished(text: str) -> None:
    """Whisper leaves the full stop off a sentence it hears break off: with `punctuated`, words
    without a final mark are unfinished; without it, the words alone decide."""
    assert utterance_complete(text, punctuated=True) is False


@pytest.mark.parametrize(
    "text", ["Where is my order?", "Thanks.", "Hello!", '"Okay."', "I need eggs."]
)
def test_a_punctuating_stt_with_a_final_mark_reads_the_words(text: str) -> None:
    """A final mark (after a closing quote too) leaves the decision to the words."""
    assert utterance_complete(text, punctuated=True) is True


async def test_the_detector_waits_on_an_unmarked_transcript_when_the_stt_punctuates() -> None:
    """The punctuating detector waits the unfinished silence on "I was wondering"; the other ends
    the turn."""
    evidence = TurnEvidence(transcript="I was wondering", trailing_silence_s=0.3)
    marked = await TranscriptTurnDetector(punctuated=True).decide(evidence)
    unmarked = await TranscriptTurnDetector().decide(evidence)
    assert (marked.end_of_turn, marked.reason) == (False, "incomplete")
    assert marked.recheck_after_s == pytest.approx(1.2)
    assert unmarked.end_of_turn


async def test_the_punctuation_rule_is_learned_from_the_first_marked_transcript() -> None:
    """`punctuated=None`: an STT that has written no sentence mark yet (a decimal point is none)
    is not held to the rule; from its first marked transcript on, it is."""
    detector = TranscriptTurnDetector(punctuated=None)
    unmarked = TurnEvidence(transcript="I was wondering", trailing_silence_s=0.6)
    assert (await detector.decide(unmarked)).end_of_turn
    assert (await detector.decide(TurnEvidence(transcript="Version 3.5 please"))).end_of_turn
    assert detector.punctuated is False
    await detector.decide(TurnEvidence(transcript="Hello there.", trailing_silence_s=0.6))
    assert detector.punctuated is True
    held = await detector.decide(unmarked)
    assert (held.end_of_turn, held.reason) == (False, "incomplete")


def test_no_words_are_neither() -> None:
    """An empty transcript says nothing about completeness."""
    assert utterance_complete("  ") is None


async def test_a_complete_utterance_ends_the_turn_at_the_pause() -> None:
    """A finished question after a 0.2 s pause: end of turn, no more waiting."""
    detector = TranscriptTurnDetector(silence_ms=500, incomplete_silence_ms=1500)
    decision = await detector.decide(
        TurnEvidence(transcript="What time is it?", trailing_silence_s=0.2)
    )
    assert (decision.end_of_turn, decision.reason) == (True, "complete")


async def test_an_unfinished_utterance_waits_for_the_longer_silence() -> None:
    """Unfinished words after a 0.2 s pause: wait, and recheck when the long silence is due."""
    detector = TranscriptTurnDetector(silence_ms=500, incomplete_silence_ms=1500)
    decision = await detector.decide(
        TurnEvidence(transcript="My account number is", trailing_silence_s=0.2)
    )
    assert decision.end_of_turn is False
    assert decision.recheck_after_s == pytest.approx(1.3)


async def test_without_words_the_silence_rule_decides() -> None:
    """No transcript: the silence-only rule (silence_ms) is the fallback."""
    detector = TranscriptTurnDetector(silence_ms=500, incomplete_silence_ms=1500)
    early = await detector.decide(TurnEvidence(trailing_silence_s=0.2))
    late = await detector.decide(TurnEvidence(trailing_silence_s=0.5))
    assert early.recheck_after_s == pytest.approx(0.3)
    assert late.end_of_turn is True


async def test_an_unfinished_utterance_ends_once_its_silence_has_passed() -> None:
    """The recheck after the long silence ends the turn even though the words were unfinished."""
    detector = TranscriptTurnDetector(silence_ms=500, incomplete_silence_ms=1500)
    decision = await detector.decide(TurnEvidence(transcript="and", trailing_silence_s=1.5))
    assert decision.end_of_turn is True


async def test_a_complete_utterance_waits_for_the_commit_silence() -> None:
    """Finished words after a pause shorter than the commit silence: wait the remainder, so a
    comma pause that a fast STT transcribes as a whole sentence does not end the turn."""
    detector = TranscriptTurnDetector(
        silence_ms=500, incomplete_silence_ms=1500, complete_silence_ms=200
    )
    early = await detector.decide(TurnEvidence(transcript="Yes, please.", trailing_silence_s=0.12))
    due = await detector.decide(TurnEvidence(transcript="Yes, please.", trailing_silence_s=0.2))
    assert (early.end_of_turn, early.reason) == (False, "complete_short")
    assert early.recheck_after_s == pytest.approx(0.08)
    assert (due.end_of_turn, due.reason) == (True, "complete")


async def test_the_commit_silence_never_exceeds_the_silence_rule() -> None:
    """A commit silence above eou_silence_ms is capped there: finished words never wait longer
    than words that are unknown."""
    detector = TranscriptTurnDetector(silence_ms=300, complete_silence_ms=900)
    decision = await detector.decide(TurnEvidence(transcript="Thanks.", trailing_silence_s=0.3))
    assert decision.end_of_turn is True


def test_a_negative_commit_silence_is_rejected() -> None:
    """Configuration errors are loud."""
    with pytest.raises(ValueError, match="negative"):
        TranscriptTurnDetector(complete_silence_ms=-1)


# The pitch rule: a statement whose voice did not fall waits


def _voice_ending(semitones: float) -> bytes:
    """1.2 s of a steady 160 Hz voice that glides `semitones` over its last 300 ms."""
    n, tail = int(SAMPLE_RATE * 1.2), int(SAMPLE_RATE * 0.3)
    f0 = np.full(n, 160.0)
    f0[-tail:] = np.geomspace(160.0, 160.0 * 2 ** (semitones / 12), tail)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    return (6000 * (np.sin(phase) + 0.5 * np.sin(2 * phase))).astype(np.int16).tobytes()


LEVEL, FALLING = _voice_ending(+1.0), _voice_ending(-5.0)


def _pitched() -> TranscriptTurnDetector:
    return TranscriptTurnDetector(
        silence_ms=500,
        incomplete_silence_ms=1500,
        complete_silence_ms=250,
        punctuated=True,
        level_pitch_silence_ms=1000,
    )


async def test_a_statement_whose_voice_stays_up_waits_the_level_pitch_silence() -> None:
    """ "I need eggs." heard from "I need eggs, ..." said with a list's level pitch: the words
    are complete, the voice is not; wait 1 s of silence, then end the turn."""
    detector = _pitched()
    early = await detector.decide(
        TurnEvidence(transcript="I need eggs.", trailing_silence_s=0.3, audio=LEVEL)
    )
    assert (early.end_of_turn, early.reason) == (False, "level_pitch")
    assert early.recheck_after_s == pytest.approx(0.7)
    due = await detector.decide(
        TurnEvidence(transcript="I need eggs.", trailing_silence_s=1.0, audio=LEVEL)
    )
    assert (due.end_of_turn, due.reason) == (True, "level_pitch_silence")


async def test_a_statement_that_falls_and_a_question_end_after_the_commit_silence() -> None:
    """A closing fall ends a statement at the commit silence; a question is not judged by its
    pitch (yes-no questions rise); without audio, or with the rule off, the words decide."""
    falling = await _pitched().decide(
        TurnEvidence(transcript="I need eggs.", trailing_silence_s=0.3, audio=FALLING)
    )
    question = await _pitched().decide(
        TurnEvidence(transcript="Is it open today?", trailing_silence_s=0.3, audio=LEVEL)
    )
    no_audio = await _pitched().decide(TurnEvidence(transcript="Thanks.", trailing_silence_s=0.3))
    off = await TranscriptTurnDetector(complete_silence_ms=250, punctuated=True).decide(
        TurnEvidence(transcript="I need eggs.", trailing_silence_s=0.3, audio=LEVEL)
    )
    for decision in (falling, question, no_audio, off):
        assert (decision.end_of_turn, decision.reason) == (True, "complete")


async def test_unfinished_words_wait_their_own_silence_whatever_the_pitch() -> None:
    """The pitch is only asked about finished words: "my number is" waits the unfinished 1.5 s
    even over a falling voice, without measuring it."""
    detector = _pitched()
    decision = await detector.decide(
        TurnEvidence(transcript="My number is", trailing_silence_s=0.3, audio=FALLING)
    )
    assert (decision.end_of_turn, decision.reason) == (False, "incomplete")
    assert decision.recheck_after_s == pytest.approx(1.2)


async def test_the_pitch_is_measured_once_from_the_pause_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`listen_ahead` at the pause starts the measurement while the words are transcribed; the
    decision and its recheck on the same audio reuse it; new audio is measured anew; closing
    the detector drops a measurement no decision took."""
    measured: list[int] = []

    def counting(pcm: bytes) -> Any:
        measured.append(len(pcm))
        return prosody.final_pitch(pcm)

    monkeypatch.setattr(completeness, "final_pitch", counting)
    detector = _pitched()
    ahead = listen_ahead(detector, LEVEL)
    assert ahead is not None
    for silence in (0.3, 0.6):
        evidence = TurnEvidence(transcript="I need eggs.", trailing_silence_s=silence, audio=LEVEL)
        assert (await detector.decide(evidence)).reason == "level_pitch"
    assert measured == [len(LEVEL)]
    longer = LEVEL + FALLING
    evidence = TurnEvidence(transcript="I need eggs, milk.", trailing_silence_s=0.3, audio=longer)
    assert (await detector.decide(evidence)).end_of_turn
    assert measured == [len(LEVEL), len(longer)]
    assert listen_ahead(TranscriptTurnDetector(), LEVEL) is None  # the rule off: nothing to do
    pending = listen_ahead(detector, FALLING)
    assert isinstance(pending, asyncio.Future)
    close_detector(detector)
    await asyncio.sleep(0)
    assert pending.cancelled()


def test_a_negative_level_pitch_silence_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        TranscriptTurnDetector(level_pitch_silence_ms=-1)


def test_the_session_turns_the_pitch_rule_on_from_the_settings() -> None:
    """`VOICE_AGENT_EOU_LEVEL_PITCH_MS` reaches the call's detector (1 s by default); 0 turns the
    measurement off altogether."""
    from voice_agent.agent.options import session_options
    from voice_agent.agent.session import _turn_detector
    from voice_agent.logging import get_logger
    from voice_agent.settings import Settings

    def detector(**settings: Any) -> Any:
        options = session_options(Settings(_env_file=None, **settings))
        return _turn_detector(options, None, get_logger("test"))

    assert Settings(_env_file=None).eou_level_pitch_ms == 1000
    on, off = detector(eou_level_pitch_ms=800), detector(eou_level_pitch_ms=0)
    assert isinstance(on, TranscriptTurnDetector)
    assert on._level_s == pytest.approx(0.8)
    assert listen_ahead(off, LEVEL) is None


def _doubting(min_confidence: float = 0.6) -> TranscriptTurnDetector:
    return TranscriptTurnDetector(
        silence_ms=500,
        incomplete_silence_ms=1500,
        complete_silence_ms=250,
        punctuated=True,
        min_confidence=min_confidence,
    )


async def test_complete_words_the_stt_doubts_wait_as_unfinished_words_do() -> None:
    """ "What is it?" guessed from "Can you tell me whether the" and scored 0.45: read as
    unfinished, the turn waits the 1.5 s silence and then ends; the same words scored 0.8, or
    without a score, end after the commit silence."""
    detector = _doubting()
    guessed = TurnEvidence(transcript="What is it?", trailing_silence_s=0.3)
    early = await detector.decide(replace(guessed, transcript_confidence=0.45))
    assert (early.end_of_turn, early.reason) == (False, "unsure_words")
    assert early.recheck_after_s == pytest.approx(1.2)
    due = await detector.decide(
        replace(guessed, transcript_confidence=0.45, trailing_silence_s=1.5)
    )
    assert (due.end_of_turn, due.reason) == (True, "unsure_words_silence")
    for confidence in (0.8, 0.6, None):
        sure = await detector.decide(replace(guessed, transcript_confidence=confidence))
        assert (sure.end_of_turn, sure.reason) == (True, "complete"), confidence


async def test_the_confidence_rule_leaves_unfinished_words_and_is_off_at_zero() -> None:
    """Unfinished words wait their own silence whatever the score; with `min_confidence` 0 (the
    detector's default) no score holds a turn."""
    unfinished = await _doubting().decide(
        TurnEvidence(transcript="My number is", trailing_silence_s=0.3, transcript_confidence=0.2)
    )
    assert (unfinished.end_of_turn, unfinished.reason) == (False, "incomplete")
    off = await _doubting(0.0).decide(
        TurnEvidence(transcript="Where is it?", trailing_silence_s=0.3, transcript_confidence=0.01)
    )
    assert (off.end_of_turn, off.reason) == (True, "complete")


@pytest.mark.parametrize(
    ("transcript", "loops"),
    [
        ("My phone number is fine, fine, fine, fine.", True),
        ("Milk Milk Milk Milk", True),
        ("No, no, no.", True),
        ("I said no, no.", False),  # twice is speech
        ("Fine, fine, fine, thanks.", False),  # the repeat does not end the words
        ("Is it five?", False),
        ("", False),
        # A phrase looped (Whisper on Piper's "milk, ... bread and butter"), the last time cut.
        ("Milk, bread and butter Milk, bread and butter Milk, bread and butter Milk, bread", True),
        ("I need eggs. Milk, bread and butter Milk, bread and butter Milk, bread and butter", True),
        ("Thank you, thank you.", False),  # a phrase twice is speech
        ("Milk, bread and butter Milk, bread and butter Milk, thanks.", False),
        ("The code is 4, 7, 2, 9, 4, 7, 2, 9.", False),  # a code read twice
        ("I need eggs, milk and bread.", False),
    ],
)
def test_looped_finds_a_word_or_phrase_repeated_at_the_end(transcript: str, loops: bool) -> None:
    assert looped(transcript) is loops


_MILK = "Milk, bread and butter "


@pytest.mark.parametrize(
    ("transcript", "said", "dropped"),
    [
        # Whisper on Piper's "I need eggs, ... milk, ... bread and butter.": the phrase forty
        # times over, the last cut short; said once, the sentence's mark kept if it had one.
        ("I need eggs. " + _MILK * 40 + "Milk, bread", "I need eggs. Milk, bread and butter", 158),
        (
            "I need eggs. " + _MILK.strip() + ". " + (_MILK.strip() + ". ") * 5,
            "I need eggs. Milk, bread and butter.",
            20,
        ),
        ("Fine, fine, fine, fine, fine, fine.", "Fine.", 5),
        # Numbers are left as said: a phone number may be five fives.
        ("My number is 5 5 5 5 5 5 5 5", "My number is 5 5 5 5 5 5 5 5", 0),
        ("It is one one one one one one.", "It is one one one one one one.", 0),
        # Shorter runs are left as said: a caller may repeat themselves.
        ("No, no, no.", "No, no, no.", 0),
        (
            "My phone number is fine, fine, fine, fine.",
            "My phone number is fine, fine, fine, fine.",
            0,
        ),
        ("Thank you, thank you.", "Thank you, thank you.", 0),
        ("I need eggs, milk and bread.", "I need eggs, milk and bread.", 0),
        ("", "", 0),
    ],
)
def test_unlooped_says_a_long_loop_once(transcript: str, said: str, dropped: int) -> None:
    assert unlooped(transcript) == (said, dropped)


async def test_complete_words_that_end_in_a_loop_wait_as_unfinished_words_do() -> None:
    """ "My phone number is fine, fine, fine, fine." (Whisper looping on "five five five",
    scored 0.70, above the confidence floor) waits the 1.5 s silence, then ends; the words
    without the loop end after the commit silence."""
    detector = _doubting()
    looping = TurnEvidence(
        transcript="My phone number is fine, fine, fine, fine.",
        trailing_silence_s=0.3,
        transcript_confidence=0.7,
    )
    early = await detector.decide(looping)
    assert (early.end_of_turn, early.reason) == (False, "looped_words")
    assert early.recheck_after_s == pytest.approx(1.2)
    due = await detector.decide(replace(looping, trailing_silence_s=1.5))
    assert (due.end_of_turn, due.reason) == (True, "looped_words_silence")
    plain = await detector.decide(replace(looping, transcript="My phone number is fine."))
    assert (plain.end_of_turn, plain.reason) == (True, "complete")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_a_min_confidence_outside_zero_to_one_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        TranscriptTurnDetector(min_confidence=bad)


async def test_the_session_reads_the_confidence_rule_from_the_settings() -> None:
    """`VOICE_AGENT_EOU_MIN_CONFIDENCE` (0.6 by default) reaches the transcript detector and the
    hybrid detector's rules."""
    from voice_agent.agent.options import session_options
    from voice_agent.agent.session import _turn_detector
    from voice_agent.logging import get_logger
    from voice_agent.pipeline.acoustic_turn import HybridTurnDetector
    from voice_agent.settings import Settings

    class Model:
        available = True

        async def end_probability(self, pcm: bytes) -> float:
            return 0.9

    assert Settings(_env_file=None).eou_min_confidence == pytest.approx(0.6)
    options = session_options(Settings(_env_file=None, eou_min_confidence=0.7))
    transcript = _turn_detector(options, None, get_logger("test"))
    assert isinstance(transcript, TranscriptTurnDetector)
    assert transcript._min_confidence == pytest.approx(0.7)
    hybrid = _turn_detector(
        replace(options, turn_detector="hybrid"), cast(Any, Model()), get_logger("test")
    )
    assert isinstance(hybrid, HybridTurnDetector)
    # The model hears an end; the words are complete, but scored 0.65: they wait.
    evidence = TurnEvidence(transcript="Where is it?", trailing_silence_s=0.3, audio=b"\0\0" * 1600)
    doubted = await hybrid.decide(replace(evidence, transcript_confidence=0.65))
    assert (doubted.end_of_turn, doubted.reason) == (False, "unsure_words")
    sure = await hybrid.decide(replace(evidence, transcript_confidence=0.9))
    assert sure.end_of_turn
