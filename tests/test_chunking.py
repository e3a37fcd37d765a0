"""Chunking with the real embedder tokenizer: exact spans, budgets, overlap, structure."""

from __future__ import annotations

from pathlib import Path

from core.types import Document, Section
from ingest.chunking import Chunker, embedding_text


def _doc(sections: list[tuple[str, tuple[str, ...], int | None]]) -> Document:
    text, out = "", []
    for body, heads, page in sections:
        if text:
            text += "\n\n"
        out.append(Section(body, len(text), page, heads))
        text += body
    return Document(Path("/x/doc.md"), "markdown", "Doc", text, out)


def test_chunks_are_exact_spans_within_budget_with_overlap(embedder) -> None:
    para = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60))
    doc = _doc([(para + "\n\n" + para, ("Intro",), None), ("Short closing words.", ("End",), None)])
    chunker = Chunker(embedder.count_tokens, max_tokens=64, overlap=0.15)
    chunks = chunker.chunk(doc, "d1", "/x/doc.md")
    assert len(chunks) > 4
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert embedder.count_tokens([c.text])[0] <= 64
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    # consecutive chunks of one section overlap by whole sentences
    first, second = chunks[0], chunks[1]
    assert second.start < first.end
    # sections are never crossed, and keep their heading path
    assert chunks[-1].text == "Short closing words." and chunks[-1].heading_path == ("End",)
    assert embedding_text(chunks[-1]).startswith("Doc › End\n")


def test_overlong_sentence_falls_back_to_word_windows(embedder) -> None:
    doc = _doc([("word " * 400, (), 3)])
    chunks = Chunker(embedder.count_tokens, max_tokens=50, overlap=0.0).chunk(doc, "d", "/p")
    assert len(chunks) >= 8
    assert all(c.page == 3 and embedder.count_tokens([c.text])[0] <= 50 for c in chunks)


def test_small_paragraphs_are_packed_together(embedder) -> None:
    body = "\n\n".join(f"Point {i}." for i in range(10))
    chunks = Chunker(embedder.count_tokens, max_tokens=256).chunk(_doc([(body, (), None)]), "d", "/p")
    assert len(chunks) == 1 and chunks[0].text == body
