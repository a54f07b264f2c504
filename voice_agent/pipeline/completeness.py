"""End of turn from the words: a complete utterance ends the turn at once, an unfinished one waits.

`TranscriptTurnDetector` reads the speculative transcript of the turn so far (the session makes
one at the caller's first short pause) and judges whether the caller has finished:

- unfinished: the words end on a conjunction, preposition, article, auxiliary, filler or a comma
  ("my account number is", "eggs, milk,", "I want to um"), or on a number while the turn is about
  a number ("my number is four five six" may go on): wait for `incomplete_silence_ms` of silence;
  with `punctuated` (an STT that ends finished sentences with a full stop, question or
  exclamation mark, as Whisper and OpenAI's transcription models do), words without one are
  unfinished too: Whisper leaves the mark off a sentence it hears break off ("I was wondering"
  for "I was wondering if", "I need eggs" for "I need eggs, ..."). `punctuated=None` learns it:
  the rule applies from the first transcript with such a mark on (one detector is one call), so
  an STT that writes no punctuation never has its turns held by it;
- finished otherwise: end the turn once the caller has been silent for `complete_silence_ms`
  (a floor under every commit: a fast STT returning a whole sentence from a comma pause must
  not end the turn there; the speculation still starts at the shorter pause);
- no words known (no transcript, or STT failed): fall back to `silence_ms`, the silence-only rule.

Rules rather than a model: they cost microseconds, run offline, and measured on synthetic speech
they beat an acoustic model that hears a flat synthetic question as unfinished
(docs/benchmarks.md). They are English-only; other languages get the silence rule's behaviour
through the fallback whenever the rules do not fire, which they rarely do on other words.
"""

from __future__ import annotations

import re

from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

__all__ = ["TranscriptTurnDetector", "utterance_complete"]

_UNFINISHED_WORDS = frozenset(
    [
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "then",
        "than",
        "that",
        "which",
        "who",
        "whose",
        "whom",
        "where",
        "when",
        "while",
        "although",
        "though",
        "unless",
        "until",
        "since",
        "as",
        "nor",
        "yet",
        "plus",
        "the",
        "a",
        "an",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "this",
        "these",
        "those",
        "some",
        "any",
        "every",
        "each",
        "no",
        "to",
        "of",
        "for",
        "with",
        "at",
        "in",
        "on",
        "from",
        "by",
        "about",
        "into",
        "onto",
        "over",
        "under",
        "between",
        "through",
        "after",
        "before",
        "without",
        "within",
        "during",
        "against",
        "toward",
        "towards",
        "like",
        "per",
        "via",
        "is",
        "are",
        "was",
        "were",
        "am",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "will",
        "would",
        "can",
        "could",
        "should",
        "shall",
        "may",
        "might",
        "must",
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "ah",
        "eh",
        "mm",
        "i",
        "we",
        "you",
        "they",
        "he",
        "she",
        "it",
        "me",
        "us",
        "them",
        "let",
        "me's",
        "i'm",
        "we're",
        "you're",
        "they're",
        "it's",
        "there's",
    ]
)
"""Words an English sentence does not end on (when spoken as the last word of a turn)."""

_NUMBER_WORDS = frozenset(
    [
        "zero",
        "oh",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "double",
        "triple",
    ]
)
_NUMBER_TOPICS = re.compile(
    r"\b(number|phone|account|code|card|zip|postcode|pin|id|digits?|order|reference|ticket)\b"
)
_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the CJK full-width ones
_MARKED = re.compile(r"[.?!\u3002\uff1f\uff01](?:\s|$)")  # a sentence mark, not "3.5"
_CLOSERS = "\"'\u201d\u2019)]"  # quotes and brackets after a sentence's final mark


def utterance_complete(transcript: str, *, punctuated: bool = False) -> bool | None:
    """Whether the words read as a finished utterance; None when there are no words.
    `punctuated`: the STT marks finished sentences, so words without a final mark are not."""
    text = transcript.strip().lower()
    words = _WORD.findall(text)
    if not words:
        return None
    if text.endswith(("?", "!")):
        return True
    if text.endswith((",", "...", "…", "-", "\u2013", ":", ";")):
        return False
    if punctuated and not text.rstrip(_CLOSERS).endswith(_SENTENCE_ENDS):
        return False
    last = words[-1]
    if last in _UNFINISHED_WORDS:
        return False
    number = last.isdigit() or last in _NUMBER_WORDS
    return not (number and _NUMBER_TOPICS.search(text))


class TranscriptTurnDetector:
    """Ends complete utterances at once, waits for unfinished ones (see the module docstring)."""

    reads_transcript = True
    """The session asks this detector with the speculative transcript of the turn so far."""

    def __init__(
        self,
        *,
        silence_ms: int = 500,
        incomplete_silence_ms: int = 1500,
        complete_silence_ms: int = 0,
        punctuated: bool | None = False,
    ) -> None:
        if min(silence_ms, incomplete_silence_ms, complete_silence_ms) < 0:
            raise ValueError("silences must not be negative")
        self._silence_s = silence_ms / 1000
        self._incomplete_s = max(incomplete_silence_ms, silence_ms) / 1000
        self._complete_s = min(complete_silence_ms, silence_ms) / 1000
        self._learn = punctuated is None
        self.punctuated = bool(punctuated)
        """Whether the STT marks finished sentences (see the module docstring)."""

    def complete(self, transcript: str) -> bool | None:
        """`utterance_complete` as this detector reads it (with its `punctuated`, learned from
        the transcripts when it was given None)."""
        if self._learn and not self.punctuated:
            self.punctuated = _MARKED.search(transcript.strip()) is not None
        return utterance_complete(transcript, punctuated=self.punctuated)

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        """End of turn now, or how much more silence to wait for."""
        if evidence.speaking:
            return TurnDecision(end_of_turn=False, reason="speaking")
        complete = self.complete(evidence.transcript)
        if complete:
            wait_s, reason = self._complete_s, "complete"
        elif complete is None:
            wait_s, reason = self._silence_s, "no_words"
        else:
            wait_s, reason = self._incomplete_s, "incomplete"
        remaining = wait_s - evidence.trailing_silence_s
        if remaining <= 1e-9:
            return TurnDecision(
                end_of_turn=True, reason=reason if complete else f"{reason}_silence"
            )
        if complete:
            reason = "complete_short"  # finished words, but the commit silence is not over yet
        return TurnDecision(end_of_turn=False, recheck_after_s=remaining, reason=reason)
