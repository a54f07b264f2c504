"""SentenceChunker: where LLM text is cut into speakable chunks, and that nothing is lost."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.pipeline.chunker import ChunkerConfig, SentenceChunker


def _chunk(text: str, *, step: int = 1, config: ChunkerConfig | None = None) -> list[str]:
    """Feed `text` in deltas of `step` characters, then flush; returns every chunk."""
    chunker = SentenceChunker(config=config)
    chunks: list[str] = []
    for i in range(0, len(text), step):
        chunks += chunker.push(text[i : i + step])
    rest = chunker.flush()
    return [*chunks, rest] if rest else chunks


def _stream(deltas: list[str]) -> tuple[list[list[str]], str]:
    """Chunks returned by each push, and the flushed rest."""
    chunker = SentenceChunker()
    return [chunker.push(d) for d in deltas], chunker.flush()


# --- boundaries ----------------------------------------------------------------------------------


def test_a_sentence_is_yielded_as_soon_as_the_next_word_starts() -> None:
    """The first sentence comes out when the space after its period arrives, not at flush."""
    per_push, rest = _stream(["Sure", ".", " Let", " me check that for you", "."])
    assert per_push == [[], [], ["Sure."], [], []]
    assert rest == "Let me check that for you."


def test_question_and_exclamation_marks_end_sentences() -> None:
    """? and ! close chunks like a period does."""
    text = "Is that your final answer? Great, thank you so much! I will book it now."
    assert _chunk(text) == [
        "Is that your final answer?",
        "Great, thank you so much!",
        "I will book it now.",
    ]


def test_semicolon_colon_and_spaced_dash_end_clauses() -> None:
    """; : and a spaced em dash close chunks once the chunk is long enough."""
    text = (
        "Here is what I found for you today: two flights leave in the morning; "
        "the first one is cheaper — but it has a stop."
    )
    assert _chunk(text) == [
        "Here is what I found for you today:",
        "two flights leave in the morning;",
        "the first one is cheaper —",
        "but it has a stop.",
    ]


def test_a_line_break_ends_a_chunk() -> None:
    """List items on separate lines become separate chunks."""
    text = "Your options are these\n- a window seat near the front\n- an aisle seat at the back"
    assert _chunk(text) == [
        "Your options are these",
        "- a window seat near the front",
        "- an aisle seat at the back",
    ]


def test_commas_split_only_long_clauses() -> None:
    """A comma closes a chunk past the comma threshold, not before."""
    short = "Well, yes, I can do that for you right now."
    assert _chunk(short) == [short]
    long = (
        "I looked at every flight that leaves on Friday morning from the main airport, "
        "and the earliest one is at six."
    )
    assert _chunk(long) == [
        "I looked at every flight that leaves on Friday morning from the main airport,",
        "and the earliest one is at six.",
    ]


def test_the_first_chunk_may_be_short_but_later_short_sentences_merge() -> None:
    """ "Okay." alone starts speech at once; later short sentences are joined into one chunk."""
    text = "Okay. I have booked it for you. Yes. No. Maybe later today, then."
    assert _chunk(text) == [
        "Okay.",
        "I have booked it for you.",
        "Yes. No. Maybe later today, then.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "The dose is 3.5 milligrams and the total is 1,250.75 dollars for the whole year.",
        "Please ask Dr. Smith and Mr. Jones before you sign anything on the new form.",
        "Bring something small, e.g. a book, i.e. nothing heavy at all, to the meeting.",
        "Visit https://example.com/docs/v2.1/index.html?a=1.5 for all of the details now.",
        "Write to support.team@example.co.uk or to j.doe@mail.example.org with your question.",
        "The meeting is at 10:30 in room 4.2 of building B and takes about 1.5 hours.",
        "The book was written by J. R. R. Tolkien and published by Allen & Unwin in 1937.",
        "Bring pens, paper, etc. and your ID to the office on the second floor of St. Mary's.",
        "He works at Acme Inc. and at Foo Ltd. as a consultant for the vs. Code team stuff.",
    ],
)
def test_no_split_inside_numbers_abbreviations_urls_or_emails(sentence: str) -> None:
    """Decimals, thousands, times, titles, e.g./i.e., initials, URLs and emails stay whole."""
    no_commas = ChunkerConfig(comma_min_chars=300, first_comma_min_chars=300)
    assert _chunk(sentence, config=no_commas) == [sentence]


def test_an_abbreviation_that_can_end_a_sentence_splits_before_a_capital() -> None:
    """ "etc." and "a.m." end a sentence when the next word is capitalised."""
    text = "We sell apples and pears and so on etc. Then we close at nine a.m. Every single day."
    assert _chunk(text) == [
        "We sell apples and pears and so on etc.",
        "Then we close at nine a.m.",
        "Every single day.",
    ]


def test_the_next_word_is_awaited_when_it_decides() -> None:
    """After "etc. " nothing is yielded until the next word's first letter arrives."""
    per_push, _ = _stream(["We sell apples and pears etc.", " ", "T"])
    assert per_push == [[], [], ["We sell apples and pears etc."]]
    per_push, rest = _stream(["We sell apples and pears etc.", " ", "and more."])
    assert per_push == [[], [], []]
    assert rest == "We sell apples and pears etc. and more."


def test_closing_quotes_and_brackets_stay_with_their_sentence() -> None:
    """A quote or parenthesis after the period belongs to the chunk it closes."""
    text = 'She said "we are open until nine." (That is today only.) See you then.'
    assert _chunk(text) == [
        'She said "we are open until nine."',
        "(That is today only.)",
        "See you then.",
    ]


def test_ellipsis_ends_a_sentence() -> None:
    """ "..." and "…" close chunks."""
    text = "Let me think about that for a moment... Right, the answer is twelve… probably."
    assert _chunk(text) == [
        "Let me think about that for a moment...",
        "Right, the answer is twelve…",
        "probably.",
    ]


def test_text_without_boundaries_is_cut_at_a_space_past_max_chars() -> None:
    """A run-on stream is cut at the last space before max_chars."""
    config = ChunkerConfig(max_chars=60)
    text = " ".join(["word"] * 40)
    chunks = _chunk(text, config=config)
    assert all(len(c) <= 60 for c in chunks)
    assert len(chunks) == 4
    assert " ".join(chunks) == text


def test_flush_returns_the_rest_and_starts_a_new_reply() -> None:
    """flush() yields the unfinished tail; the next reply's first chunk may be short again."""
    chunker = SentenceChunker()
    assert chunker.push("I have booked the table for you. And") == [
        "I have booked the table for you."
    ]
    assert chunker.flush() == "And"
    assert chunker.flush() == ""
    assert chunker.push("Done. And") == ["Done."]


def test_reset_drops_the_buffered_text() -> None:
    """reset() (an interrupted reply) discards text not yet yielded."""
    chunker = SentenceChunker()
    chunker.push("This will never be spoken because")
    chunker.reset()
    assert chunker.flush() == ""


def test_leading_whitespace_and_empty_deltas_are_harmless() -> None:
    """Deltas that are empty or only whitespace produce nothing by themselves."""
    per_push, rest = _stream(["", "  ", "\n", "Hi there.", "", " ", "Bye."])
    assert per_push == [[], [], [], [], [], ["Hi there."], []]
    assert rest == "Bye."


def test_invalid_config_is_rejected() -> None:
    """Thresholds that contradict each other raise ValueError."""
    with pytest.raises(ValueError, match="at least 1"):
        ChunkerConfig(min_chars=0)
    with pytest.raises(ValueError, match="max_chars"):
        ChunkerConfig(max_chars=10)


# --- properties ----------------------------------------------------------------------------------

_TRICKY = [
    "3.5", "1,000", "10:30", "e.g.", "i.e.", "Dr.", "Mr.", "etc.", "a.m.", "U.S.", "J.",
    "example.com", "https://a.b/c.d?x=1.5", "a.b@c.io", "Hello.", "What?", "Yes!", "so,",
    "then;", "note:", "\u2014", "\u2013", "-", "...", "…", '"quoted."', "(aside.)", "I.", "No.",
    "word", "another", "The", "and", "\n", "**bold.**",
]  # fmt: skip
_words = st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(min_size=1, max_size=8)), max_size=60)
_spaces = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", ""])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    words = draw(_words)
    return "".join(w + draw(_spaces) for w in words)


@st.composite
def _partition(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=_texts())
def test_chunks_rejoin_to_the_input_modulo_whitespace(data: st.DataObject, text: str) -> None:
    """Whatever the text and however it is cut into deltas, no word is lost, added or split."""
    chunker = SentenceChunker()
    chunks: list[str] = []
    for delta in data.draw(_partition(text)):
        chunks += chunker.push(delta)
    chunks.append(chunker.flush())
    assert " ".join(chunks).split() == text.split()
    assert all(c and c == c.strip() for c in chunks[:-1])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=_texts())
def test_chunks_do_not_depend_on_how_deltas_are_cut(data: st.DataObject, text: str) -> None:
    """Character by character, in random pieces or all at once: the same chunks."""
    whole = _chunk(text, step=max(1, len(text)))
    chunker = SentenceChunker()
    pieces: list[str] = []
    for delta in data.draw(_partition(text)):
        pieces += chunker.push(delta)
    rest = chunker.flush()
    assert ([*pieces, rest] if rest else pieces) == whole
    assert _chunk(text, step=1) == whole


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_any_unicode_text_is_preserved(text: str) -> None:
    """Arbitrary Unicode, control characters included, comes back word for word."""
    assert " ".join(_chunk(text, step=3)).split() == text.split()
