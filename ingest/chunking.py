"""Structure-aware chunking budgeted in the embedder's own tokens.

Sections (pages or heading blocks) are never crossed; inside a section, paragraphs are packed
whole, long paragraphs fall back to sentences, and runaway sentences to word windows. Each chunk
is an exact span of `Document.text`, so a citation can highlight precisely what was retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.types import Chunk, Document, Section

TokenCounter = Callable[[Sequence[str]], list[int]]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Unit:
    """A span of `Document.text` with its token count."""

    start: int
    end: int
    tokens: int


def _spans(text: str, offset: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank pieces of `text` between matches of `pattern`, as absolute (start, end)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for m in pattern.finditer(text):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    spans = []
    for s, e in out:
        piece = text[s:e]
        stripped = piece.strip()
        if not stripped:
            continue
        s += len(piece) - len(piece.lstrip())
        e = s + len(stripped)
        spans.append((offset + s, offset + e))
    return spans


class Chunker:
    """Split documents into overlapping chunks of at most `max_tokens` embedder tokens."""

    def __init__(self, count_tokens: TokenCounter, max_tokens: int = 256, overlap: float = 0.15) -> None:
        if max_tokens < 16:
            raise ValueError("chunk budget must be at least 16 tokens")
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = int(max_tokens * max(0.0, min(overlap, 0.5)))

    def _units(self, text: str, start: int, end: int) -> list[Unit]:
        """Split one span into units that each fit the budget."""
        paras = _spans(text[start:end], start, _PARAGRAPH_BREAK)
        counts = self.count([text[s:e] for s, e in paras])
        units: list[Unit] = []
        for (s, e), n in zip(paras, counts, strict=True):
            if n <= self.max_tokens:
                units.append(Unit(s, e, n))
                continue
            sents = _spans(text[s:e], s, _SENTENCE_END)
            sent_counts = self.count([text[a:b] for a, b in sents])
            for (a, b), k in zip(sents, sent_counts, strict=True):
                if k <= self.max_tokens:
                    units.append(Unit(a, b, k))
                else:
                    units.extend(self._word_windows(text, a, b))
        return units

    def _word_windows(self, text: str, start: int, end: int) -> list[Unit]:
        """Hard split of one overlong sentence into word windows that fit."""
        words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
        counts = self.count([text[a:b] for a, b in words])
        units: list[Unit] = []
        i = 0
        while i < len(words):
            total, j = 0, i
            while j < len(words) and (total + counts[j] <= self.max_tokens or j == i):
                total += counts[j]
                j += 1
            units.append(Unit(words[i][0], words[j - 1][1], total))
            i = j
        return units

    def _pack(self, units: list[Unit]) -> list[tuple[int, int]]:
        """Greedy packing with an overlap of trailing units carried into the next chunk."""
        chunks: list[tuple[int, int]] = []
        i = 0
        while i < len(units):
            total, j = 0, i
            while j < len(units) and total + units[j].tokens <= self.max_tokens:
                total += units[j].tokens
                j += 1
            if j == i:  # a unit that alone exceeds the budget cannot happen after _units; guard anyway
                j = i + 1
            chunks.append((units[i].start, units[j - 1].end))
            if j >= len(units):
                break
            back, carried = j, 0
            # carry whole trailing units; the first may run to twice the target so that overlap still
            # happens when sentences are longer than 15 % of the budget
            while back - 1 > i and (carried + units[back - 1].tokens <= self.overlap_tokens
                                    or (carried == 0 and units[back - 1].tokens <= 2 * self.overlap_tokens)):
                back -= 1
                carried += units[back].tokens
            i = back
        return chunks

    def split_section(self, text: str, section: Section) -> list[tuple[int, int]]:
        """Chunk spans (absolute offsets) for one section."""
        units = self._units(text, section.start, section.start + len(section.text))
        return self._pack(units)

    def chunk(self, doc: Document, doc_id: str, path: str, doc_version: int = 1) -> list[Chunk]:
        """All chunks of a document, numbered in reading order."""
        chunks: list[Chunk] = []
        for section in doc.sections:
            for s, e in self.split_section(doc.text, section):
                chunks.append(
                    Chunk(
                        doc_id=doc_id,
                        chunk_index=len(chunks),
                        text=doc.text[s:e],
                        start=s,
                        end=e,
                        page=section.page,
                        heading_path=section.heading_path,
                        title=doc.title,
                        path=path,
                        file_type=doc.file_type,
                        doc_version=doc_version,
                    )
                )
        return chunks


def embedding_text(chunk: Chunk) -> str:
    """What the encoders see: the heading trail gives a passage the context its text leaves implicit."""
    trail = " › ".join(h for h in (chunk.title, *chunk.heading_path) if h)
    return f"{trail}\n{chunk.text}" if trail else chunk.text
