"""Sentence chunking: LLM text deltas in, speakable chunks out as soon as they are complete.

A chunk closes at a sentence end (. ! ? …), a clause end (; : and a spaced dash), a line break,
or, for a long clause, at a comma. A boundary counts only when whitespace follows it (after any
closing quotes or brackets), so "3.5", "1,000", "10:30", "example.com/a.b" and "a.b@c.io" never
split; the word before a period is checked for abbreviations ("Dr.", "Mr.", "e.g.", "etc."). A
period whose meaning depends on the next word waits for it, so every decision depends only on the
text, never on how it was cut into deltas.

Short boundaries do not close a chunk: a sentence shorter than `min_chars` merges with the next,
fewer and longer TTS requests sounding better; the first chunk of a reply has a lower bar, because
it decides how soon the agent starts speaking. Text with no boundary at all is cut at a space
once it passes `max_chars`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["ChunkerConfig", "SentenceChunker"]

# Typographic characters are written as escapes, since several look like ASCII ones.
_ELLIPSIS, _EM_DASH, _EN_DASH = "\u2026", "\u2014", "\u2013"
_DASHES = _EM_DASH + _EN_DASH
_SENTENCE_END = frozenset(".!?" + _ELLIPSIS)
_CLAUSE_END = frozenset(";:" + _DASHES)
_CLOSERS = frozenset("\"')]}*_`\u00bb\u201d\u2019")
_OPENERS = "\"'([{*_`\u00ab\u201c\u2018"

# Abbreviations that never end a sentence here: titles before a name, and Latin connectives.
_NEVER_FINAL = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "st", "mt", "ft", "gen", "col", "capt", "lt",
        "sgt", "rev", "hon", "gov", "sen", "rep", "pres", "fig", "figs", "approx", "dept",
        "vol", "vs", "cf", "viz", "e.g", "i.e", "eg", "ie",
    }
)  # fmt: skip
# Abbreviations that often end a sentence too: a boundary only if a capital letter follows.
_MAYBE_FINAL = frozenset(
    {
        "etc", "inc", "ltd", "co", "corp", "jr", "sr", "al", "no", "nos", "ph.d", "esp",
        "a.m", "p.m",
    }
)  # fmt: skip
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")  # u.s, a.m, e.g: single letters between dots


class _Kind(enum.Enum):
    SENTENCE = enum.auto()
    CLAUSE = enum.auto()
    COMMA = enum.auto()


@dataclass(frozen=True, slots=True)
class ChunkerConfig:
    """Length thresholds, in characters, that decide whether a boundary closes a chunk."""

    min_chars: int = 20
    """A sentence or clause boundary closes a chunk only once the chunk is this long."""
    first_min_chars: int = 4
    """The same for a reply's first chunk: short, so speech starts sooner."""
    comma_min_chars: int = 60
    """A comma closes a chunk only once the chunk is this long (a long clause)."""
    first_comma_min_chars: int = 25
    """The same for a reply's first chunk."""
    max_chars: int = 300
    """With no boundary by this length, the chunk is cut at its last space."""

    def __post_init__(self) -> None:
        if min(self.min_chars, self.first_min_chars) < 1:
            raise ValueError("minimum chunk lengths must be at least 1")
        if self.max_chars < max(self.min_chars, self.comma_min_chars, self.first_comma_min_chars):
            raise ValueError("max_chars must not be below the other thresholds")


class SentenceChunker:
    """Turns a stream of LLM text deltas into speakable chunks, one reply at a time."""

    def __init__(self, *, config: ChunkerConfig | None = None) -> None:
        self._config = config if config is not None else ChunkerConfig()
        self._buffer = ""
        self._scan = 0  # positions before this were checked and close no chunk
        self._first = True

    @property
    def config(self) -> ChunkerConfig:
        """The chunker's thresholds."""
        return self._config

    def push(self, delta: str) -> list[str]:
        """Add a text delta; returns the chunks it completed (often none)."""
        self._buffer += delta
        chunks: list[str] = []
        while (chunk := self._next_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def flush(self) -> str:
        """End the reply: returns the remaining text ("" if none) and starts a new reply."""
        rest = self._buffer.strip()
        self.reset()
        return rest

    def reset(self) -> None:
        """Drop buffered text (an interrupted reply) and start a new reply."""
        self._buffer = ""
        self._scan = 0
        self._first = True

    def _next_chunk(self) -> str | None:
        self._buffer = self._buffer.lstrip()
        text = self._buffer
        max_chars = self._config.max_chars
        i = self._scan
        while i < len(text):
            if i >= max_chars and (cut := _last_space(text, i)) > 0:
                return self._emit(cut)
            kind = _candidate(text, i)
            if kind is not None:
                end = _boundary_end(text, i, kind)
                if end is None:
                    break  # undecided until more text arrives
                if end > 0 and len(text[:end].rstrip()) >= self._threshold(kind):
                    return self._emit(end)
            i += 1
        self._scan = i
        return None

    def _threshold(self, kind: _Kind) -> int:
        c = self._config
        if kind is _Kind.COMMA:
            return c.first_comma_min_chars if self._first else c.comma_min_chars
        return c.first_min_chars if self._first else c.min_chars

    def _emit(self, end: int) -> str:
        chunk = self._buffer[:end].strip()
        self._buffer = self._buffer[end:]
        self._scan = 0
        self._first = False
        return chunk


def _last_space(text: str, i: int) -> int:
    """Index of the last whitespace in text[1 : i + 1], or -1."""
    for j in range(i, 0, -1):
        if text[j].isspace():
            return j
    return -1


def _candidate(text: str, i: int) -> _Kind | None:
    """Whether text[i] could end a chunk, and which kind of boundary it would be."""
    ch = text[i]
    if ch in _SENTENCE_END:
        return _Kind.SENTENCE
    if ch == "\n" or (ch in _CLAUSE_END and (ch not in _DASHES or text[i - 1 : i].isspace())):
        return _Kind.CLAUSE
    if ch == ",":
        return _Kind.COMMA
    return None


def _boundary_end(text: str, i: int, kind: _Kind) -> int | None:
    """Where a chunk ending at text[i] would end: > 0 if a boundary, 0 if not, None if unknown."""
    if text[i] == "\n":
        return i
    j = i + 1
    while j < len(text) and text[j] in _CLOSERS:
        j += 1
    if j == len(text):
        return None
    if not text[j].isspace():
        return 0
    if text[i] != ".":
        return j
    verdict = _period_verdict(text, i)
    if verdict is not None:
        return j if verdict else 0
    k = j
    while k < len(text) and text[k].isspace():
        k += 1
    if k == len(text):
        return None
    return j if text[k].isupper() or text[k] in _OPENERS else 0


def _period_verdict(text: str, i: int) -> bool | None:
    """Whether the period at text[i] ends a sentence; None when the next word decides."""
    start = i
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:i].lstrip(_OPENERS)
    if word.endswith("."):  # an ellipsis "..." ends a sentence
        return True
    lowered = word.lower()
    if lowered in _NEVER_FINAL:
        return False
    if len(word) == 1 and word.isupper() and word != "I":  # an initial, as in "J. Smith"
        return False
    if lowered in _MAYBE_FINAL or len(word) == 1 or _INITIALISM.fullmatch(lowered):
        return None
    return True
