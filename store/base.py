"""The `Store` protocol: one small surface, two implementations (Qdrant Edge and qdrant-client).

Both keep dense and BM25 vectors in the same points (named vectors `dense` and `bm25`), so a
delete or re-index can never leave a stale copy in a second index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

DENSE = "dense"
BM25 = "bm25"

SparseTerms = tuple[list[int], list[float]]


class StoreError(RuntimeError):
    """A store problem the user can act on."""


class StoreLocked(StoreError):
    """The embedded store is held by another process."""


@dataclass(frozen=True)
class Cond:
    """One payload condition. `kind`: eq (exact), any (one of), range (numeric gte/lte)."""

    key: str
    kind: Literal["eq", "any", "range"]
    value: Any


@dataclass(frozen=True)
class Filter:
    """Conjunction of `must` conditions minus any `must_not` one."""

    must: tuple[Cond, ...] = ()
    must_not: tuple[Cond, ...] = ()

    @staticmethod
    def eq(key: str, value: Any) -> Filter:
        """Filter on one exact payload value."""
        return Filter(must=(Cond(key, "eq", value),))

    def and_(self, other: Filter | None) -> Filter:
        """Both filters at once."""
        if other is None:
            return self
        return Filter(must=self.must + other.must, must_not=self.must_not + other.must_not)


@dataclass
class PointData:
    """A point to upsert."""

    id: str
    dense: Sequence[float]
    sparse: SparseTerms
    payload: dict[str, Any]


@dataclass
class Record:
    """A stored point as read back (score is 0 for scroll/retrieve)."""

    id: str
    payload: dict[str, Any]
    score: float = 0.0


@dataclass
class QuerySpec:
    """One search: dense only, BM25 only, or both fused inside Qdrant.

    `fusion` is `rrf` (weighted by `weights` = [dense, bm25]) or `dbsf`.
    """

    dense: Sequence[float] | None = None
    sparse: SparseTerms | None = None
    filter: Filter | None = None
    limit: int = 10
    prefetch_limit: int = 50
    fusion: Literal["rrf", "dbsf"] = "rrf"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    with_payload: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """A named Qdrant collection with `dense` + `bm25` vectors."""

    name: str

    def meta(self) -> dict[str, Any]:
        """Collection metadata (embedding model id, dims, created_at)."""
        ...

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or replace points (ids are deterministic, so this is idempotent)."""
        ...

    def delete(self, flt: Filter) -> None:
        """Delete every point matching the filter."""
        ...

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        ...

    def set_payload(self, flt: Filter, payload: dict[str, Any]) -> None:
        """Overwrite the given payload keys on matching points."""
        ...

    def query(self, spec: QuerySpec) -> list[Record]:
        """Run one search."""
        ...

    def query_many(self, specs: Sequence[QuerySpec]) -> list[list[Record]]:
        """Run several searches in one call where the engine allows it."""
        ...

    def scroll(self, flt: Filter | None = None, batch: int = 256) -> Iterator[Record]:
        """Every matching point with its payload."""
        ...

    def retrieve(self, ids: Sequence[str]) -> list[Record]:
        """Points by id (missing ids are skipped)."""
        ...

    def count(self, flt: Filter | None = None) -> int:
        """Number of matching points."""
        ...

    def flush(self) -> None:
        """Make writes durable."""
        ...

    def close(self) -> None:
        """Release files and locks."""
        ...


def folders_of(path: str) -> list[str]:
    """Every ancestor folder of a POSIX path, for prefix filters that work on a keyword index.

    >>> folders_of("/a/b/c.txt")
    ['/', '/a', '/a/b']
    """
    parts = path.split("/")[:-1]
    out: list[str] = []
    for i in range(len(parts)):
        out.append("/".join(parts[: i + 1]) or "/")
    return list(dict.fromkeys(out))
