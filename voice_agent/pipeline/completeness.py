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
  an STT that writes no punctuation never has its turns held by it. Two endings are unfinished
  even under a question or exclamation mark, where the STT heard a question in a sentence that
  broke off: an article, possessive or conjunction no sentence ends on ("about the?"), and a
  subordinate clause with its subject but no verb yet ("can you tell me whether that?");
- finished words the STT was unsure of (`Transcript.confidence` below `min_confidence`) are
  read as unfinished: Whisper guesses a whole sentence from a fragment cut at a pause ("Can you
  tell me whether the" heard as "What is it?"), and scores its guess low;
- finished words ending in one word or a phrase (up to 8 words) said three times or more in a
  row ("my phone number is fine, fine, fine, fine.", "milk, bread and butter milk, bread and
  butter milk, bread") are read as unfinished too: that is Whisper's decoder looping on a
  fragment it could not make out, not what the caller said; a caller who did say "no, no, no."
  waits the longer silence (and a loop of five or more is said once in the committed words,
  `unlooped`);
- finished words said with a voice that did not fall at the end (a list item, "I need eggs,
  ..."), with the pitch rule on (`level_pitch_silence_ms`), wait that long;
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

import asyncio
import re

from voice_agent.pipeline.prosody import PitchEnding, final_pitch
from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

__all__ = ["TranscriptTurnDetector", "looped", "unlooped", "utterance_complete"]

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
_NEVER_LAST = frozenset(
    ["the", "a", "an", "my", "your", "our", "their", "whether", "and", "but", "because", "unless"]
)
"""Words no English sentence ends on, not even a question that strands a preposition ("what is it
made of?"): a transcript ending on one is unfinished whatever its mark ("about the?")."""
_SUBORDINATORS = frozenset(
    ["whether", "if", "because", "although", "though", "unless", "until", "while", "when"]
)
_CLAUSE_SUBJECTS = frozenset(
    ["i", "you", "we", "they", "he", "she", "it", "that", "this", "there", "these", "those"]
)
"""A subordinate clause that has its subject and no verb yet is unfinished, whatever the mark
("can you tell me whether that?", "call me back when you"): a clause needs its verb."""
_WORD = re.compile(r"[a-z0-9']+")
_ASKING_ENDS = ("?", "!", "\uff1f", "\uff01")  # a question or exclamation, CJK full width too
_SENTENCE_ENDS = (".", "\u3002", *_ASKING_ENDS)
_MARKED = re.compile(r"[.?!\u3002\uff1f\uff01](?:\s|$)")  # a sentence mark, not "3.5"
_CLOSERS = "\"'\u201d\u2019)]"  # quotes and brackets after a sentence's final mark
_LOOP_TIMES = 3  # a word or phrase said this often in a row at the end is a decoder loop
_LOOP_PHRASE_WORDS = 8  # the longest phrase looked for
_UNLOOP_TIMES = 5  # a loop this long is taken out of the committed words (see `unlooped`)
_WORD_CASED = re.compile(r"[a-z0-9']+", re.IGNORECASE)  # `_WORD` on words not lowered first


def utterance_complete(transcript: str, *, punctuated: bool = False) -> bool | None:
    """Whether the words read as a finished utterance; None when there are no words.
    `punctuated`: the STT marks finished sentences, so words without a final mark are not."""
    text = transcript.strip().lower()
    words = _WORD.findall(text)
    if not words:
        return None
    if words[-1] in _NEVER_LAST or _verbless_clause(words):
        return False
    if text.endswith(("?", "!")):
        return True
    if text.endswith((",", "...", "…", "-", "\u2013", ":", ";")):
        return False
    if punctuated and not text.rstrip(_CLOSERS).endswith(_SENTENCE_ENDS):
        return False
    last = words[-1]
    if last in _UNFINISHED_WORDS:
        return False
    return not (_number(last) and _NUMBER_TOPICS.search(text))


def _number(word: str) -> bool:
    return word.isdigit() or word in _NUMBER_WORDS


def looped(transcript: str) -> bool:
    """Whether the words end in a loop: one word or a phrase of up to `_LOOP_PHRASE_WORDS`
    said three times or more in a row ("fine, fine, fine.", "milk, bread and butter milk, bread
    and butter milk, bread and butter milk, bread"), the last time perhaps cut short. The mark
    of an STT decoder repeating itself on audio it could not make out."""
    return _loop_at_end(_WORD.findall(transcript.lower()), times=_LOOP_TIMES) is not None


def unlooped(transcript: str) -> tuple[str, int]:
    """The words with a loop of `_UNLOOP_TIMES` or more at their end said once, and how many
    words that dropped (0: the words as they were). Only a run that long: a caller may say
    "no, no, no." but not a phrase five times over; Whisper's decoder, once looping, goes on
    until its token limit ("Milk, bread and butter" forty times), which would otherwise reach
    the model, the captions and the record. Numbers are left alone: "five five five five five"
    may be what a phone number is."""
    matches = list(_WORD_CASED.finditer(transcript))
    words = [m.group().lower() for m in matches]
    start = _loop_at_end(words, times=_UNLOOP_TIMES)  # its first word that repeats one before
    if start is None or all(_number(word) for word in words[start:]):
        return transcript, 0  # digits said over and over are a number ("5 5 5 5 5 5 5")
    kept = transcript[: matches[start - 1].end()]
    rest = transcript.rstrip().rstrip(_CLOSERS)
    mark = rest[-1] if rest.endswith(_SENTENCE_ENDS) else ""
    return kept + mark, len(matches) - start


def _loop_at_end(words: list[str], *, times: int) -> int | None:
    """Where the shortest loop said `times` or more at the end of `words` starts repeating:
    the index of the first word equal to the one a period before it; None without one."""
    for period in range(1, _LOOP_PHRASE_WORDS + 1):
        # The longest run at the end in which every word repeats the one `period` words before.
        start = len(words)
        while start > period and words[start - 1] == words[start - 1 - period]:
            start -= 1
        if len(words) - start + period >= times * period:
            return start
    return None


def _verbless_clause(words: list[str]) -> bool:
    """The words end on a subordinator and its subject alone ("whether that", "if you")."""
    return len(words) >= 2 and words[-2] in _SUBORDINATORS and words[-1] in _CLAUSE_SUBJECTS


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
        level_pitch_silence_ms: int | None = None,
        min_confidence: float = 0.0,
    ) -> None:
        if min(silence_ms, incomplete_silence_ms, complete_silence_ms) < 0:
            raise ValueError("silences must not be negative")
        if not 0.0 <= min_confidence < 1.0:
            raise ValueError("min_confidence must be at least 0 and below 1")
        self._min_confidence = min_confidence
        if level_pitch_silence_ms is not None and level_pitch_silence_ms < 0:
            raise ValueError("silences must not be negative")
        self._silence_s = silence_ms / 1000
        self._incomplete_s = max(incomplete_silence_ms, silence_ms) / 1000
        self._complete_s = min(complete_silence_ms, silence_ms) / 1000
        self._level_s = None if level_pitch_silence_ms is None else level_pitch_silence_ms / 1000
        self._pitch: tuple[tuple[int, bytes], asyncio.Future[PitchEnding | None]] | None = None
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
        if complete and self._unsure(evidence):
            wait_s, reason = self._incomplete_s, "unsure_words"
            complete = False  # a guess at a fragment reads as finished: wait as unfinished
        elif complete and looped(evidence.transcript):
            wait_s, reason = self._incomplete_s, "looped_words"
            complete = False  # the STT repeating itself on a fragment: wait as unfinished
        elif complete and await self._level_statement(evidence):
            wait_s, reason = max(self._level_s or 0.0, self._complete_s), "level_pitch"
            complete = False  # finished words, a voice held up for more: wait as unsure
        elif complete:
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

    def _unsure(self, evidence: TurnEvidence) -> bool:
        """Whether the STT scored the words below `min_confidence`."""
        confidence = evidence.transcript_confidence
        return confidence is not None and confidence < self._min_confidence

    def listen_ahead(self, audio: bytes) -> asyncio.Future[PitchEnding | None] | None:
        """With the pitch rule on, start measuring how the turn's `audio` ends while its words
        are transcribed (the session calls this at the pause); `decide` awaits the same run."""
        if self._level_s is None or not audio:
            return None
        return self._pitch_of(audio)

    def close(self) -> None:
        """The call is over: drop a pitch measurement no decision took."""
        if self._pitch is not None:
            self._pitch[1].cancel()
            self._pitch = None

    def _pitch_of(self, audio: bytes) -> asyncio.Future[PitchEnding | None]:
        key = (len(audio), audio[-320:])  # a recheck, or the decision after listen_ahead
        if self._pitch is None or self._pitch[0] != key:
            if self._pitch is not None:
                self._pitch[1].cancel()
            self._pitch = (key, asyncio.ensure_future(asyncio.to_thread(final_pitch, audio)))
        return self._pitch[1]

    async def _level_statement(self, evidence: TurnEvidence) -> bool:
        """Whether the words are a statement (no question or exclamation mark) whose voice did
        not fall at the end, with the pitch rule on (`level_pitch_silence_ms`)."""
        if self._level_s is None or not evidence.audio:
            return False
        if evidence.transcript.strip().rstrip(_CLOSERS).endswith(_ASKING_ENDS):
            return False
        ending = await self._pitch_of(evidence.audio)
        return ending is not None and not ending.falls
