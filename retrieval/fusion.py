"""Client-side reciprocal rank fusion, for merging the lists of several rewritten queries.

Fusion of the dense and BM25 branches of one query happens inside Qdrant; this only merges
whole result lists (one per query variant), which Qdrant cannot do in a single request.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import Hit


def rrf(lists: Sequence[Sequence[Hit]], k: int = 60, weights: Sequence[float] | None = None) -> list[Hit]:
    """Fuse ranked lists: score(d) = Σ w_i / (k + rank_i(d)), rank starting at 1.

    The first occurrence of a hit keeps its per-stage scores; the fused score is stored as `fused`.
    """
    weights = list(weights) if weights is not None else [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError("one weight per list")
    if len(lists) == 1:
        return list(lists[0])
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, w in zip(lists, weights, strict=True):
        for rank, hit in enumerate(hits, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + w / (k + rank)
            first.setdefault(hit.id, hit)
    fused = sorted(first.values(), key=lambda h: scores[h.id], reverse=True)
    for h in fused:
        h.scores["fused"] = scores[h.id]
    return fused
