"""The server store: a Qdrant server (or cluster) through qdrant-client, same schema and query shape."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.local.qdrant_local import QdrantLocal

from store.base import BM25, DENSE, Cond, Filter, PointData, QuerySpec, Record

PAYLOAD_INDEXES = {
    "doc_id": m.PayloadSchemaType.KEYWORD,
    "paths": m.PayloadSchemaType.KEYWORD,
    "folders": m.PayloadSchemaType.KEYWORD,
    "file_type": m.PayloadSchemaType.KEYWORD,
    "namespace": m.PayloadSchemaType.KEYWORD,
    # long-term memory items (graphs/memory/store.py): recall filters on these on every turn
    "value.status": m.PayloadSchemaType.KEYWORD,
    "value.kind": m.PayloadSchemaType.KEYWORD,
    "ingested_at": m.PayloadSchemaType.FLOAT,
}


def _condition(c: Cond) -> m.FieldCondition:
    if c.kind == "eq":
        return m.FieldCondition(key=c.key, match=m.MatchValue(value=c.value))
    if c.kind == "any":
        return m.FieldCondition(key=c.key, match=m.MatchAny(any=list(c.value)))
    if c.kind == "range":
        gte, lte = c.value
        return m.FieldCondition(key=c.key, range=m.Range(gte=gte, lte=lte))
    raise ValueError(f"unknown condition kind {c.kind!r}")


def to_client_filter(flt: Filter | None) -> m.Filter | None:
    """Translate the project's filter into qdrant-client's."""
    if flt is None or (not flt.must and not flt.must_not):
        return None
    return m.Filter(
        must=[_condition(c) for c in flt.must] or None,
        must_not=[_condition(c) for c in flt.must_not] or None,
    )


class ServerStore:
    """One collection on a Qdrant server (or qdrant-client's in-memory mode in tests)."""

    def __init__(self, client: QdrantClient, name: str, dim: int, meta: dict[str, Any]) -> None:
        self.name = name
        self.client = client
        if not client.collection_exists(name):
            try:
                client.create_collection(
                    name,
                    vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
                    sparse_vectors_config={BM25: m.SparseVectorParams(modifier=m.Modifier.IDF)},
                    metadata={**meta, "dim": dim, "created_at": time.time()},
                )
            except Exception:
                # The app and the worker start together in compose: the other one may have just created it.
                if not client.collection_exists(name):
                    raise
            if not isinstance(client._client, QdrantLocal):  # local mode has no payload indexes (and warns)
                for key, schema in PAYLOAD_INDEXES.items():
                    client.create_payload_index(name, key, field_schema=schema)  # idempotent on the server

    def meta(self) -> dict[str, Any]:
        """Collection metadata."""
        return dict(self.client.get_collection(self.name).config.metadata or {})

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or replace points."""
        if not points:
            return
        self.client.upsert(
            self.name,
            points=[
                m.PointStruct(
                    id=p.id,
                    vector={
                        DENSE: list(map(float, p.dense)),
                        BM25: m.SparseVector(indices=list(p.sparse[0]), values=list(p.sparse[1])),
                    },
                    payload=p.payload,
                )
                for p in points
            ],
            wait=True,
        )

    def delete(self, flt: Filter) -> None:
        """Delete matching points."""
        self.client.delete(self.name, points_selector=m.FilterSelector(filter=to_client_filter(flt)), wait=True)

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        if ids:
            self.client.delete(self.name, points_selector=m.PointIdsList(points=list(ids)), wait=True)

    def set_payload(self, flt: Filter, payload: dict[str, Any]) -> None:
        """Overwrite payload keys on matching points."""
        selector = m.FilterSelector(filter=to_client_filter(flt))
        self.client.set_payload(self.name, payload=payload, points=selector, wait=True)

    def _request(self, spec: QuerySpec) -> m.QueryRequest:
        flt = to_client_filter(spec.filter)
        sparse = spec.sparse if spec.sparse is not None and spec.sparse[0] else None
        sparse_q = m.SparseVector(indices=list(sparse[0]), values=list(sparse[1])) if sparse else None
        if spec.dense is not None and sparse_q is not None:
            fusion: Any = (
                m.FusionQuery(fusion=m.Fusion.DBSF)
                if spec.fusion == "dbsf"
                else m.RrfQuery(rrf=m.Rrf(k=spec.rrf_k, weights=list(spec.weights)))
            )
            return m.QueryRequest(
                prefetch=[
                    m.Prefetch(query=list(map(float, spec.dense)), using=DENSE, limit=spec.prefetch_limit, filter=flt),
                    m.Prefetch(query=sparse_q, using=BM25, limit=spec.prefetch_limit, filter=flt),
                ],
                query=fusion,
                limit=spec.limit,
                with_payload=spec.with_payload,
            )
        if spec.dense is not None:
            return m.QueryRequest(query=list(map(float, spec.dense)), using=DENSE, filter=flt, limit=spec.limit,
                                  with_payload=spec.with_payload)
        if sparse_q is None:
            raise ValueError("empty query")
        return m.QueryRequest(query=sparse_q, using=BM25, filter=flt, limit=spec.limit, with_payload=spec.with_payload)

    def query(self, spec: QuerySpec) -> list[Record]:
        """Run one search."""
        return self.query_many([spec])[0]

    def query_many(self, specs: Sequence[QuerySpec]) -> list[list[Record]]:
        """Several searches in one round trip."""
        runnable = [(i, s) for i, s in enumerate(specs) if s.dense is not None or (s.sparse and s.sparse[0])]
        out: list[list[Record]] = [[] for _ in specs]
        if not runnable:
            return out
        responses = self.client.query_batch_points(self.name, requests=[self._request(s) for _, s in runnable])
        for (i, _), resp in zip(runnable, responses, strict=True):
            out[i] = [Record(id=str(p.id), payload=dict(p.payload or {}), score=float(p.score)) for p in resp.points]
        return out

    def scroll(self, flt: Filter | None = None, batch: int = 256) -> Iterator[Record]:
        """Every matching point."""
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.name, scroll_filter=to_client_filter(flt), limit=batch, offset=offset, with_payload=True
            )
            for r in records:
                yield Record(id=str(r.id), payload=dict(r.payload or {}))
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str]) -> list[Record]:
        """Points by id."""
        if not ids:
            return []
        return [Record(id=str(r.id), payload=dict(r.payload or {})) for r in self.client.retrieve(self.name, list(ids))]

    def count(self, flt: Filter | None = None) -> int:
        """Number of matching points."""
        return int(self.client.count(self.name, count_filter=to_client_filter(flt), exact=True).count)

    def flush(self) -> None:
        """Writes are acknowledged with `wait=True`; nothing to do."""

    def close(self) -> None:
        """The client is shared between collections; closing is the factory's job."""
