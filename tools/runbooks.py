"""Search the bundled support runbooks (`data/runbooks/*.md`).

A small keyword search is enough for a handful of runbooks: query words found in a runbook's
keywords weigh most, then its title, then its text.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from voice_agent.tooling import ToolContext, tool

DATA = Path(__file__).parent / "data" / "runbooks"

# fmt: off
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "can", "do", "does", "for", "from", "get", "how", "i", "in", "is",
    "it", "my", "of", "on", "or", "our", "the", "to", "was", "what", "when", "why", "will",
    "with", "won", "t", "cant", "not", "me", "we", "you", "your",
})
# fmt: on


@dataclass(frozen=True, slots=True)
class Runbook:
    """One parsed runbook."""

    slug: str
    title: str
    keywords: frozenset[str]
    summary: str
    steps: tuple[str, ...]
    escalation: str
    text: str


def _words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _parse(path: Path) -> Runbook:
    title, keywords, summary, section = path.stem, "", [], ""
    sections: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
        elif line.lower().startswith("keywords:"):
            keywords = line.split(":", 1)[1]
        elif line.startswith("## "):
            section = line[3:].strip().lower()
        elif line.strip():
            (sections.setdefault(section, []) if section else summary).append(line.strip())
    steps = tuple(re.sub(r"^\d+\.\s*", "", s) for s in sections.get("steps", []))
    return Runbook(
        slug=path.stem,
        title=title,
        keywords=frozenset(_words(keywords.replace(",", " "))),
        summary=" ".join(summary),
        steps=steps,
        escalation=" ".join(sections.get("if it does not work", [])),
        text=path.read_text(encoding="utf-8"),
    )


def _load() -> list[Runbook]:
    return [_parse(p) for p in sorted(DATA.glob("*.md"))]


def _score(runbook: Runbook, terms: list[str]) -> int:
    title, body = set(_words(runbook.title)), _words(runbook.text)
    return sum(
        3 * (t in runbook.keywords) + 2 * (t in title) + min(body.count(t), 3) for t in terms
    )


@tool(timeout=2.0)
async def search_runbooks(
    ctx: ToolContext,
    *,
    query: Annotated[str, Field(min_length=2, max_length=200)],
    max_results: Annotated[int, Field(ge=1, le=3)] = 2,
) -> dict[str, Any]:
    """Search the support runbooks for step-by-step help with a common problem.

    Args:
        query: The user's problem in a few words, e.g. "forgot password" or "VPN keeps dropping".
        max_results: How many runbooks to return (1 to 3).
    """
    terms = _words(query)
    runbooks = await asyncio.to_thread(_load)
    scored = sorted(((_score(r, terms), r) for r in runbooks), key=lambda x: -x[0])
    hits = [r for score, r in scored if score > 0][:max_results]
    ctx.log.info("runbooks.searched", terms=len(terms), hits=[r.slug for r in hits])
    if not hits:
        return {
            "results": [],
            "message": "No runbook matches. Ask the user for more detail, or offer a ticket.",
        }
    return {
        "results": [
            {
                "runbook": r.slug,
                "title": r.title,
                "summary": r.summary,
                "steps": list(r.steps),
                "if_it_does_not_work": r.escalation,
            }
            for r in hits
        ]
    }
