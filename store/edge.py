"""The embedded store: Qdrant Edge, in-process and persistent on disk.

One process owns a shard at a time. Qdrant Edge's own WAL lock fails late and can break the
holder's next flush (measured, DESIGN.md §2), so an application-level lock file is taken first and
a second process is refused with a clear message.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from filelock import FileLock, Timeout

from store.base import BM25, DENSE, Cond, Filter, PointData, QuerySpec, Record, StoreLocked

PAYLOAD_INDEXES = {
    "doc_id": qe.PayloadSchemaType.Keyword,
    "paths": qe.PayloadSchemaType.Keyword,
    "folders": qe.PayloadSchemaType.Keyword,
    "file_type": qe.PayloadSchemaType.Keyword,
    "namespace": qe.PayloadSchemaType.Keyword,
    # long-term memory items (graphs/memory/store.py): recall filters on these on every turn
    "value.status": qe.PayloadSchemaType.Keyword,
    "value.kind": qe.PayloadSchemaType.Keyword,
    "ingested_at": qe.PayloadSchemaType.Float,
}


class EdgeLock:
    """An exclusive, non-blocking lock on an embedded store directory (released by the OS on crash)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / ".lock"
        self._lock = FileLock(str(self.path), thread_local=False)

    def acquire(self) -> None:
        """Take the lock or raise `StoreLocked` at once."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreLocked(
                f"the embedded store at {self.path.parent} is in use by another process "
                "(is the app or `brain watch` running?). Stop it, or use it through the app."
            ) from None

    def release(self) -> None:
        """Give the lock back."""
        if self._lock.is_locked:
            self._lock.release(force=True)


def _condition(c: Cond) -> Any:
    if c.kind == "eq":
        return qe.FieldCondition(key=c.key, match=qe.MatchValue(c.value))
    if c.kind == "any":
        return qe.FieldCondition(key=c.key, match=qe.MatchAny(list(c.value)))
    if c.kind == "range":
        gte, lte = c.value
        return qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=gte, lte=lte))
    raise ValueError(f"unknown condition kind {c.kind!r}")


def to_edge_filter(flt: Filter | None) -> qe.Filter | None:
    """Translate the project's filter into Qdrant Edge's."""
    if flt is None or (not flt.must and not flt.must_not):
        return None
    return qe.Filter(
        must=[_condition(c) for c in flt.must] or None,
        must_not=[_condition(c) for c in flt.must_not] or None,
    )


class EdgeStore:
    """One collection as one Qdrant Edge shard under `<root>/<name>`."""

    def __init__(self, root: Path, name: str, dim: int, meta: dict[str, Any], lock: EdgeLock) -> None:
        self.name = name
        self.root = root
        self._dir = root / name
        self._meta_path = root / f"{name}.meta.json"
        self._lock = lock
        self._mutex = threading.RLock()  # the shard is shared by the watcher thread and the UI
        if (self._dir / ".created").exists():
            self._shard = qe.EdgeShard.load(str(self._dir))
            self._meta = json.loads(self._meta_path.read_text()) if self._meta_path.exists() else {}
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
            config = qe.EdgeConfig(
                vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
                sparse_vectors={BM25: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            )
            self._shard = qe.EdgeShard.create(str(self._dir), config)
            for key, schema in PAYLOAD_INDEXES.items():
                self._shard.update(qe.UpdateOperation.create_field_index(key, schema))
            self._shard.flush()
            self._meta = {**meta, "dim": dim, "created_at": time.time()}
            self._meta_path.write_text(json.dumps(self._meta, indent=2))
            (self._dir / ".created").touch()

    def meta(self) -> dict[str, Any]:
        """Collection metadata."""
        return dict(self._meta)

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or replace points."""
        if not points:
            return
        edge_points = [
            qe.Point(
                id=p.id,
                vector={DENSE: list(map(float, p.dense)), BM25: qe.SparseVector(list(p.sparse[0]), list(p.sparse[1]))},
                payload=p.payload,
            )
            for p in points
        ]
        with self._mutex:
            self._shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, flt: Filter) -> None:
        """Delete matching points."""
        with self._mutex:
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(to_edge_filter(flt)))

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        if ids:
            with self._mutex:
                self._shard.update(qe.UpdateOperation.delete_points(list(ids)))

    def set_payload(self, flt: Filter, payload: dict[str, Any]) -> None:
        """Overwrite payload keys on matching points."""
        with self._mutex:
            self._shard.update(qe.UpdateOperation.set_payload_by_filter(to_edge_filter(flt), payload))

    def _request(self, spec: QuerySpec) -> qe.QueryRequest:
        flt = to_edge_filter(spec.filter)
        dense = qe.Query.Nearest(list(map(float, spec.dense)), using=DENSE) if spec.dense is not None else None
        sparse = (
            qe.Query.Nearest(qe.SparseVector(list(spec.sparse[0]), list(spec.sparse[1])), using=BM25)
            if spec.sparse is not None
            else None
        )
        if dense is not None and sparse is not None:
            fusion = (qe.Fusion.Dbsf() if spec.fusion == "dbsf"
                      else qe.Fusion.Rrf(k=spec.rrf_k, weights=list(spec.weights)))
            return qe.QueryRequest(
                limit=spec.limit,
                with_payload=spec.with_payload,
                query=fusion,
                prefetches=[
                    qe.Prefetch(limit=spec.prefetch_limit, query=dense, filter=flt),
                    qe.Prefetch(limit=spec.prefetch_limit, query=sparse, filter=flt),
                ],
            )
        single = dense if dense is not None else sparse
        if single is None:
            raise ValueError("a query needs a dense vector, sparse terms, or both")
        return qe.QueryRequest(limit=spec.limit, with_payload=spec.with_payload, query=single, filter=flt)

    def query(self, spec: QuerySpec) -> list[Record]:
        """Run one search."""
        if spec.sparse is not None and not spec.sparse[0] and spec.dense is None:
            return []  # a query of only stop words has no terms
        if spec.sparse is not None and not spec.sparse[0]:
            spec = QuerySpec(**{**spec.__dict__, "sparse": None})
        with self._mutex:
            points = self._shard.query(self._request(spec))
        return [Record(id=str(p.id), payload=dict(p.payload or {}), score=float(p.score)) for p in points]

    def query_many(self, specs: Sequence[QuerySpec]) -> list[list[Record]]:
        """Several searches (Edge runs them one by one; each is milliseconds)."""
        return [self.query(s) for s in specs]

    def scroll(self, flt: Filter | None = None, batch: int = 256) -> Iterator[Record]:
        """Every matching point."""
        offset = None
        while True:
            with self._mutex:
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=batch, filter=to_edge_filter(flt), with_payload=True)
                )
            for r in records:
                yield Record(id=str(r.id), payload=dict(r.payload or {}))
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str]) -> list[Record]:
        """Points by id."""
        if not ids:
            return []
        with self._mutex:
            records = self._shard.retrieve(list(ids), with_payload=True, with_vector=False)
        return [Record(id=str(r.id), payload=dict(r.payload or {})) for r in records]

    def count(self, flt: Filter | None = None) -> int:
        """Number of matching points."""
        with self._mutex:
            return int(self._shard.count(qe.CountRequest(exact=True, filter=to_edge_filter(flt))))

    def flush(self) -> None:
        """Make writes durable."""
        with self._mutex:
            self._shard.flush()

    def optimize(self) -> bool:
        """Build indexes (blocks; run it off the query path when ingestion is idle)."""
        with self._mutex:
            return bool(self._shard.optimize())

    def close(self) -> None:
        """Flush and close the shard (the directory lock is owned by `EdgeLock`)."""
        with self._mutex:
            try:
                self._shard.flush()
            finally:
                self._shard.close()
