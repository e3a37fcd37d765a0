"""Hybrid search: per query, dense + BM25 prefetch fused inside Qdrant; several queries fused by RRF.

Each returned `Hit` carries what a citation needs (document, path, page or heading path, char span,
text) and its score at every stage it went through, for the "how I answered" view.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.encoders import Bm25Encoder, Embedder
from core.settings import Settings
from core.types import Hit
from retrieval.filters import SearchFilters
from retrieval.fusion import rrf
from retrieval.rerank import Reranker
from store.base import QuerySpec, Record, Store
from store.ids import point_id


@dataclass
class SearchResult:
    """Ranked hits plus what happened on the way (for the UI and benchmarks)."""

    hits: list[Hit]
    queries: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    candidates: int = 0
    reranker_status: str = ""


def _hits(records: Sequence[Record], stage: str) -> list[Hit]:
    return [Hit.from_payload(r.id, r.payload, {stage: r.score}) for r in records]


def drop_overlaps(hits: Sequence[Hit]) -> list[Hit]:
    """Keep the best-ranked of any hits that cover overlapping spans of the same document."""
    kept: list[Hit] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for h in hits:
        taken = spans.setdefault(h.doc_id, [])
        if any(h.start < e and s < h.end for s, e in taken):
            continue
        taken.append((h.start, h.end))
        kept.append(h)
    return kept


class Retriever:
    """Search one chunks collection with the configured fusion, filters and reranker."""

    def __init__(self, settings: Settings, store: Store, embedder: Embedder, bm25: Bm25Encoder,
                 reranker: Reranker | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.bm25 = bm25
        self.reranker = reranker or Reranker(settings.reranker_model)

    def _spec(self, dense: list[float] | None, sparse: tuple[list[int], list[float]] | None,
              filters: SearchFilters | None, limit: int) -> QuerySpec:
        s = self.settings
        return QuerySpec(dense=dense, sparse=sparse, filter=filters.to_filter() if filters else None, limit=limit,
                         prefetch_limit=max(s.prefetch_k, limit), fusion=s.fusion, rrf_k=s.rrf_k,  # type: ignore[arg-type]
                         weights=(s.dense_weight, s.bm25_weight))

    def branch(self, query: str, mode: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        """One branch alone: `dense`, `bm25` or `hybrid` (used by the evaluation harness)."""
        dense = self.embedder.embed_query(query) if mode in ("dense", "hybrid") else None
        sparse = self.bm25.query(query) if mode in ("bm25", "hybrid") else None
        stage = "fused" if mode == "hybrid" else mode
        return _hits(self.store.query(self._spec(dense, sparse, filters, k)), stage)

    def search(self, queries: str | Sequence[str], filters: SearchFilters | None = None, k: int | None = None,
               rerank: bool | None = None, stage_scores: bool = True) -> SearchResult:
        """Hybrid search for one or more phrasings of a question; best `k` hits first."""
        queries = [queries] if isinstance(queries, str) else [q for q in queries if q.strip()]
        k = k or self.settings.retrieval_k
        rerank = self.settings.rerank if rerank is None else rerank
        n = max(k, self.settings.rerank_candidates) if rerank else k
        timings: dict[str, float] = {}

        t = time.perf_counter()
        dense_vecs = self.embedder.embed(queries)
        sparse_terms = [self.bm25.query(q) for q in queries]
        timings["encode"] = time.perf_counter() - t

        t = time.perf_counter()
        specs: list[QuerySpec] = []
        for vec, terms in zip(dense_vecs, sparse_terms, strict=True):
            specs.append(self._spec(vec.tolist(), terms, filters, n))
            if stage_scores:  # branch scores shown per hit; each is a few ms on Qdrant
                specs.append(self._spec(vec.tolist(), None, filters, n))
                specs.append(self._spec(None, terms, filters, n))
        results = self.store.query_many(specs)
        per_query: list[list[Hit]] = []
        step = 3 if stage_scores else 1
        for i in range(0, len(results), step):
            fused = _hits(results[i], "fused")
            if stage_scores:
                for stage, recs in (("dense", results[i + 1]), ("bm25", results[i + 2])):
                    by_id = {r.id: (rank, r.score) for rank, r in enumerate(recs, start=1)}
                    for h in fused:
                        if h.id in by_id:
                            h.scores[stage] = by_id[h.id][1]
                            h.scores[f"{stage}_rank"] = float(by_id[h.id][0])
            per_query.append(fused)
        candidates = drop_overlaps(rrf(per_query, k=self.settings.multi_query_rrf_k))
        timings["search"] = time.perf_counter() - t

        status = ""
        if rerank:
            t = time.perf_counter()
            head = self.settings.rerank_candidates
            # the un-reranked tail stays behind the reranked head, so k > rerank_candidates still gets k hits
            candidates = self.reranker.rerank(queries[0], candidates[:head]) + candidates[head:]
            timings["rerank"] = time.perf_counter() - t
            status = self.reranker.status
        hits = candidates[:k]
        if self.settings.neighbour_expansion:
            self.expand(hits)
        return SearchResult(hits=hits, queries=list(queries), timings=timings, candidates=len(candidates),
                            reranker_status=status)

    def expand(self, hits: Sequence[Hit]) -> None:
        """Attach the chunk before and after each hit (as `payload['context_before'/'context_after']`)."""
        # one neighbour can serve two hits (chunks 3 and 5 both border chunk 4), so keep every claimant
        wanted: dict[str, list[tuple[Hit, str]]] = {}
        for h in hits:
            for idx, key in ((h.chunk_index - 1, "context_before"), (h.chunk_index + 1, "context_after")):
                if idx >= 0:
                    wanted.setdefault(point_id(h.doc_id, idx), []).append((h, key))
        for rec in self.store.retrieve(list(wanted)):
            for h, key in wanted.get(rec.id, []):
                h.payload[key] = rec.payload.get("text", "")
