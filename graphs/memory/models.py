"""What a memory is: the stored item (`MemoryItem`) and what the extraction model returns (`Extraction`).

A memory lives in the LangGraph store as an item of namespace `(user_id, "memories")`; its value is
`MemoryItem.to_value()`, so any LangGraph store can hold it and filter on `status` and `kind`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Kind = Literal["preference", "fact", "project", "decision"]
KINDS: tuple[str, ...] = ("preference", "fact", "project", "decision")

ACTIVE = "active"
SUPERSEDED = "superseded"


def now_utc() -> datetime:
    """The current time, tz-aware UTC (every memory timestamp is)."""
    return datetime.now(UTC)


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def memory_namespace(user_id: str) -> tuple[str, str]:
    """The store namespace of a user's memories."""
    return (user_id, "memories")


def forgotten_namespace(user_id: str) -> tuple[str, str]:
    """Where a user's 'forget' tombstones live (hashed words only, never the forgotten text)."""
    return (user_id, "forgotten")


class MemoryItem(BaseModel):
    """One thing remembered about the user, with its history links.

    `superseded_by` is set when a newer, conflicting memory replaced this one; the old item is kept as history.
    """

    id: str
    text: str
    kind: Kind = "fact"
    created_at: datetime = Field(default_factory=now_utc)
    updated_at: datetime = Field(default_factory=now_utc)
    valid_from: datetime = Field(default_factory=now_utc)
    superseded_by: str | None = None
    supersedes: str | None = None
    source_thread: str | None = None
    source_turn: int | None = None
    score: float | None = None  # similarity to the query, on search results only

    @field_validator("created_at", "updated_at", "valid_from", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> datetime:
        return _as_utc(value)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> str:
        value = str(value or "fact").strip().lower()
        return value if value in KINDS else "fact"

    @property
    def active(self) -> bool:
        """Whether this is current knowledge (not replaced by a newer memory)."""
        return self.superseded_by is None

    def to_value(self) -> dict[str, Any]:
        """The store value: JSON-friendly, with `status` to filter current memories in any LangGraph store."""
        return {
            "text": self.text, "kind": self.kind, "status": ACTIVE if self.active else SUPERSEDED,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
            "valid_from": self.valid_from.isoformat(), "superseded_by": self.superseded_by,
            "supersedes": self.supersedes, "source_thread": self.source_thread, "source_turn": self.source_turn,
        }

    @classmethod
    def from_item(cls, item: Any) -> MemoryItem:
        """A memory from a LangGraph store `Item`/`SearchItem` (its key is the memory id)."""
        value = dict(item.value)
        value.setdefault("created_at", item.created_at)
        value.setdefault("updated_at", item.updated_at)
        value.setdefault("valid_from", value["created_at"])
        value.pop("status", None)
        return cls(id=item.key, score=getattr(item, "score", None), **value)


class ExtractedMemory(BaseModel):
    """One durable thing the user said about themselves, as the extraction model writes it."""

    text: str = Field(description="One short sentence about the user, e.g. 'The user uses R on Windows.'")
    kind: Kind = Field(default="fact", description="preference | fact | project | decision")
    replaces: str | None = Field(default=None, description="An older fact this one corrects, if the user said so.")

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> str:
        value = str(value or "fact").strip().lower()
        return value if value in KINDS else "fact"


class Extraction(BaseModel):
    """The extraction model's answer: zero or more memories."""

    memories: list[ExtractedMemory] = Field(default_factory=list)
