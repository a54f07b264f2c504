"""Backchannels: whether words said over the agent only acknowledge it, or ask for the floor.

Pure functions on a transcript (Whisper's, so spelled many ways) and the speech's length; the
turn-taking machine (`turn_taking.py`) applies them in this order: `interrupts` (an interrupting
word or a question), then `is_backchannel` (acknowledgements only), then `sounds_like_hum`
(short and few words that are neither: a misheard hum). Tested in
`tests/unit/test_turn_speculation.py`.
"""

from __future__ import annotations

import itertools
import re

BACKCHANNELS = frozenset(
    {
        "mm", "hm", "uh-huh", "uh", "huh", "ah", "aha", "oh", "um", "er", "yeah", "yes", "yep",
        "yup", "okay", "right", "sure", "alright", "cool", "great", "fine", "good", "nice",
        "perfect", "exactly", "true", "correct", "absolutely", "definitely", "indeed", "totally",
        "gotcha", "understood", "noted", "wow", "thanks", "got-it", "i-see", "all-right",
        "sounds-good", "makes-sense", "of-course", "fair-enough", "that's-right", "that's-true",
        "thank-you", "i-know", "go-on", "go-ahead", "i-understand", "sure-thing", "no-problem",
        "no-worries", "will-do", "oh-wow",
    }
)  # fmt: skip
"""Acknowledgements, in their normal spelling (`normalise_words`); a phrase is hyphenated."""

INTERRUPTING = frozenset(
    {
        "stop", "wait", "no", "nope", "nah", "not", "don't", "dont", "isn't", "can't", "won't",
        "sorry", "pardon", "excuse", "hold", "hang", "actually", "but", "hello", "question",
        "repeat", "again", "moment", "minute", "second", "sec", "listen", "cancel", "wrong",
        "enough", "what", "why", "how", "who", "where", "when", "which", "help", "hey", "can",
        "could", "would", "never", "mind", "forget", "slow", "louder", "speak", "back", "skip",
        "pause", "quiet", "disagree", "instead", "mean", "please",
    }
)  # fmt: skip
"""Words that always mean the caller wants the floor, however short the speech."""

_CANONICAL = [  # (spelling, normal form): Whisper writes the same sound many ways
    (re.compile(r"h*m+(-?h*m+)*|u*m+-?h+u*m+"), "mm"),  # mm, hmm, mhm, mm-hmm, hmmhm
    (re.compile(r"u+h+-?h+u+h+|u+h+-u+h+"), "uh-huh"),  # uh-huh, uhhuh, uh-uh (a mishearing)
    (re.compile(r"u+h+"), "uh"),
    (re.compile(r"u+m+"), "um"),
    (re.compile(r"a+h+"), "ah"),
    (re.compile(r"a+h+a+"), "aha"),
    (re.compile(r"o+h+"), "oh"),
    (re.compile(r"h+u+h+"), "huh"),
    (re.compile(r"e+r+m*"), "er"),
    (re.compile(r"o+k+(a+y+|e+y+|ie)?(-?d+o+k+(e+y+|ie|a+y+))?|k+a+y+|k"), "okay"),
    (re.compile(r"d+o+k+(e+y+|ie)"), "okay"),  # the rest of "okey dokey"
    (re.compile(r"m+k+a+y+"), "okay"),  # mmkay
    (re.compile(r"y+e+a+h*|y+a+h*|y+e+h+|y+e+s+|y+e+p+|y+u+p+"), "yeah"),
    (re.compile(r"right-?o+|rite"), "right"),
    (re.compile(r"alright|aight"), "all-right"),
    (re.compile(r"gotcha|gotchya"), "gotcha"),
]
_PHRASES = {tuple(phrase.split("-")): phrase for phrase in BACKCHANNELS if "-" in phrase}
"""Two words read as one acknowledgement ("got it" → "got-it", "uh huh" → "uh-huh")."""
_LINKS = frozenset(
    {"that's", "thats", "that", "it's", "its", "is", "sounds", "very", "really", "i"}
)
"""Dropped before an acknowledgement ("that's fine", "it's right", "sounds great", "very good")."""
_CONJUNCTIONS = frozenset({"and", "so", "then", "well"})
"""Ignored before and after an acknowledgement ("and yeah", "oh okay", "so right")."""

_BACKCHANNEL_MAX_WORDS = 4  # after repeats are folded: "okay, right, got it, thanks"
_HUM_MAX_MS = 900
_HUM_MAX_WORDS = 3


def _normal(word: str) -> str:
    for spelling, normal in _CANONICAL:
        if spelling.fullmatch(word):
            return normal
    return word


def normalise_words(text: str) -> list[str]:
    """`text`'s words in their normal spelling: lower case; a run of single letters joined
    ("M.M." → "mm", "O.K." → "okay"); variants folded ("mhm", "mm-hmm" → "mm"; "okey" →
    "okay"); acknowledging phrases hyphenated ("got it" → "got-it"); immediate repeats folded
    ("yeah yeah yeah" → "yeah"); a linking word before an acknowledgement dropped ("that's
    fine" → "fine")."""
    raw = re.findall(r"[a-z']+(?:-[a-z']+)*", text.lower().replace("\u2019", "'"))
    tokens = [t.strip("'") for t in raw if t.strip("'")]
    words: list[str] = []
    for letter, group in itertools.groupby(tokens, lambda t: len(t) == 1 and t != "i"):
        run = list(group)  # a spelled-out sound: "m.m.a.c.m" is one word, not five
        words += ["".join(run)] if letter else run
    words = [_normal(w) for w in words]
    merged: list[str] = []
    for word in words:
        phrase = _PHRASES.get((merged[-1], word)) if merged else None
        if phrase is not None:
            merged[-1] = phrase
        elif not merged or merged[-1] != word:
            merged.append(word)
    after = [*merged[1:], ""]
    linked = [w for i, w in enumerate(merged) if not (w in _LINKS and after[i] in BACKCHANNELS)]
    return [w for i, w in enumerate(linked) if not i or linked[i - 1] != w]


def _core(words: list[str]) -> list[str]:
    """`words` without the conjunctions around them."""
    start, end = 0, len(words)
    while start < end and words[start] in _CONJUNCTIONS:
        start += 1
    while end > start and words[end - 1] in _CONJUNCTIONS:
        end -= 1
    return words[start:end]


def is_backchannel(text: str) -> bool:
    """Whether `text` only acknowledges the agent: at most four acknowledgements once spellings
    are normalised and repeats folded ("mm-hm", "yeah yeah", "oh okay", "okay, got it"),
    conjunctions around them ignored, no interrupting word."""
    words = _core(normalise_words(text))
    return (
        0 < len(words) <= _BACKCHANNEL_MAX_WORDS
        and all(w in BACKCHANNELS for w in words)
        and not any(w in INTERRUPTING for w in words)
    )


def interrupts(text: str) -> bool:
    """Whether `text` asks for the floor whatever its length: an interrupting word ("stop",
    "wait", "no", "sorry", "hold on", "actually", "excuse me", a question word), or a
    question that is not an acknowledgement ("really?"; "hmm?" is none)."""
    words = normalise_words(text)
    if any(w in INTERRUPTING for w in words):
        return True
    return "?" in text and not is_backchannel(text)


def sounds_like_hum(text: str, speech_ms: float) -> bool:
    """Whether words that are neither acknowledgement nor interruption are Whisper mishearing
    a hum: speech shorter than 900 ms held at most three words (conjunctions aside).

    Measured (benchmarks/turn_taking.py): hums and short acknowledgements over the agent that
    Whisper misheard took 700-870 ms ("mm-hm" → "and the macen", "M.M.A.C.M."; "okay, got it"
    → "okay, cut it"); every real interruption there names an interrupting word (checked
    first, so this rule never sees it) or takes longer or more words. A real interruption of
    under 900 ms and three words without one is the risk this rule takes."""
    words = _core(normalise_words(text))
    return speech_ms < _HUM_MAX_MS and len(words) <= _HUM_MAX_WORDS
