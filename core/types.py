"""Typed records passed between layers: loader → chunker → store → retrieval → answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class IngestError(Exception):
    """A file that cannot be ingested; the message is shown to the user as the reason."""


@dataclass(frozen=True)
class Section:
    """A structural unit of a document: a PDF page, or the text under one heading.

    `start` is the offset of `text` inside `Document.text`, so every chunk can point at its exact span.
    """

    text: str
    start: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()


@dataclass
class Document:
    """What a loader extracts from one file."""

    path: Path
    file_type: str
    title: str
    text: str
    sections: list[Section]
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Chunk:
    """One embeddable passage with everything a citation needs to reopen it."""

    doc_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    page: int | None
    heading_path: tuple[str, ...]
    title: str
    path: str
    file_type: str
    doc_version: int = 1

    def payload(self) -> dict[str, Any]:
        """The Qdrant payload for this chunk (the store adds model id and timestamps)."""
        return {
            "doc_id": self.doc_id,
            "doc_version": self.doc_version,
            "chunk_index": self.chunk_index,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "page": self.page,
            "heading_path": list(self.heading_path),
            "title": self.title,
            "path": self.path,
            "paths": [self.path],
            "file_type": self.file_type,
        }


@dataclass
class Hit:
    """A retrieved chunk with its score at every stage it went through."""

    id: str
    doc_id: str
    chunk_index: int
    text: str
    path: str
    title: str
    file_type: str
    start: int
    end: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The score of the latest stage (rerank > fused > dense > bm25)."""
        for stage in ("rerank", "fused", "dense", "bm25"):
            if stage in self.scores:
                return self.scores[stage]
        return 0.0

    @property
    def location(self) -> str:
        """Human-readable place in the document: page or heading path."""
        if self.page is not None:
            return f"p. {self.page}"
        return " › ".join(self.heading_path)

    @classmethod
    def from_payload(cls, point_id: str, payload: dict[str, Any], scores: dict[str, float] | None = None) -> Hit:
        """Build a hit from a stored point's payload."""
        return cls(
            id=str(point_id),
            doc_id=payload.get("doc_id", ""),
            chunk_index=int(payload.get("chunk_index", 0)),
            text=payload.get("text", ""),
            path=payload.get("path", ""),
            title=payload.get("title", ""),
            file_type=payload.get("file_type", ""),
            start=int(payload.get("start", 0)),
            end=int(payload.get("end", 0)),
            page=payload.get("page"),
            heading_path=tuple(payload.get("heading_path") or ()),
            scores=dict(scores or {}),
            payload=payload,
        )


@dataclass
class Citation:
    """A numbered source shown under an answer; `n` is the marker `[n]` used in the text."""

    n: int
    hit: Hit
    quote: str = ""
