"""Filters a user asks for, translated into store filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from store.base import Cond, Filter

_TYPE_ALIASES = {"md": "markdown", "txt": "text", "rst": "text", "htm": "html"}


@dataclass(frozen=True)
class SearchFilters:
    """Restrict a search to some documents, a folder, file types or an ingestion date range."""

    doc_ids: tuple[str, ...] = ()
    folder: str | None = None
    file_types: tuple[str, ...] = ()
    ingested_after: datetime | None = None
    ingested_before: datetime | None = None

    def to_filter(self) -> Filter | None:
        """The store filter, or None when nothing is restricted."""
        must: list[Cond] = []
        if self.doc_ids:
            must.append(Cond("doc_id", "any", list(self.doc_ids)))
        if self.folder:
            must.append(Cond("folders", "eq", str(Path(self.folder).expanduser().resolve())))
        if self.file_types:
            types = [_TYPE_ALIASES.get(t.lower().lstrip("."), t.lower().lstrip(".")) for t in self.file_types]
            must.append(Cond("file_type", "any", sorted(set(types))))
        if self.ingested_after or self.ingested_before:
            lo = self.ingested_after.timestamp() if self.ingested_after else None
            hi = self.ingested_before.timestamp() if self.ingested_before else None
            must.append(Cond("ingested_at", "range", (lo, hi)))
        return Filter(must=tuple(must)) if must else None
