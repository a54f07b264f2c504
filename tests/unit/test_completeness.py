"""The transcript turn detector: complete utterances end the turn, unfinished ones wait."""

from __future__ import annotations

import pytest

from voice_agent.pipeline.completeness import TranscriptTurnDetector, utterance_complete
from voice_agent.pipeline.turn import TurnEvidence


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
