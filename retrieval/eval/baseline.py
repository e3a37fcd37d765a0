"""The textbook hybrid baseline that LangChain users build: `rank-bm25` + dense, fused like `EnsembleRetriever`.

- `BM25Retriever.from_documents(docs)` wraps `rank_bm25.BM25Okapi` over `text.split()` tokens (no
  lower-casing, no stemming, no stop words) and returns `get_top_n`, i.e. a full argsort of the scores.
- `EnsembleRetriever(retrievers=[bm25, dense], weights=[0.5, 0.5])` fuses with weighted reciprocal rank,
  `score(d) = Σ w_i / (rank_i(d) + c)`, ranks from 1, `c = 60`, documents de-duplicated by content.
- The dense side is any vector store over the same chunks with the same embedder (exact cosine here).

It is kept as a side-by-side reference in the evaluation and the latency benchmark, never in the product:
it holds every chunk in memory and is rebuilt from scratch on any change (DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rank_bm25 import BM25Okapi

ENSEMBLE_WEIGHTS = (0.5, 0.5)  # EnsembleRetriever's default: equal weights
ENSEMBLE_C = 60  # EnsembleRetriever.c

Tokenizer = Callable[[str], list[str]]


def langchain_tokenize(text: str) -> list[str]:
    """`BM25Retriever`'s default preprocessing: whitespace split, nothing else."""
    return text.split()


class RankBm25Index:
    """`rank_bm25.BM25Okapi` over chunk texts, queried like LangChain's `BM25Retriever`."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], tokenizer: Tokenizer = langchain_tokenize) -> None:
        if len(ids) != len(texts):
            raise ValueError("one id per text")
        self.ids = list(ids)
        self.tokenizer = tokenizer
        # BM25Okapi divides by the corpus size; an empty token list is fine but an empty corpus is not.
        self.bm25 = BM25Okapi([tokenizer(t) for t in texts]) if texts else None

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Top `k` (id, score), ranked the way `BM25Okapi.get_top_n` ranks (full descending argsort)."""
        if self.bm25 is None:
            return []
        scores = self.bm25.get_scores(self.tokenizer(query))
        top = np.argsort(scores)[::-1][:k]
        return [(self.ids[i], float(scores[i])) for i in top]


class DenseIndex:
    """Exact cosine search over unit-normalised vectors (what FAISS `IndexFlatIP` or an in-memory store does)."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self.ids = list(ids)
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, vector: Sequence[float] | np.ndarray, k: int) -> list[tuple[str, float]]:
        """Top `k` (id, cosine) for a unit-normalised query vector."""
        if not self.ids:
            return []
        scores = self.matrix @ np.asarray(vector, dtype=np.float32)
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(self.ids[i], float(scores[i])) for i in top]


def weighted_rrf(lists: Sequence[Sequence[str]], weights: Sequence[float] = ENSEMBLE_WEIGHTS,
                 c: int = ENSEMBLE_C) -> list[tuple[str, float]]:
    """`EnsembleRetriever.weighted_reciprocal_rank` over id lists: (id, fused score), best first.

    Ties keep first-seen order (the retrievers' order), as LangChain's stable sort does.
    """
    if len(lists) != len(weights):
        raise ValueError("one weight per list")
    scores: dict[str, float] = {}
    for ranked, w in zip(lists, weights, strict=True):
        for rank, doc in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (rank + c)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


class EnsembleBaseline:
    """rank-bm25 + a dense search, fused by weighted RRF: LangChain's hybrid recipe with its defaults.

    `dense_search(query, k)` returns ranked ids; in the harness it is the store's own dense branch (the
    same chunks, embedder and exact cosine), in the latency benchmark a `DenseIndex` over the same vectors.
    """

    def __init__(self, bm25: RankBm25Index, dense_search: Callable[[str, int], Sequence[str]],
                 weights: Sequence[float] = ENSEMBLE_WEIGHTS, c: int = ENSEMBLE_C) -> None:
        self.bm25 = bm25
        self.dense_search = dense_search
        self.weights = tuple(weights)
        self.c = c

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Each retriever returns `k` chunks (LangChain's default is 4; raised here to the evaluation depth)."""
        sparse = [i for i, _ in self.bm25.search(query, k)]
        dense = list(self.dense_search(query, k))
        return weighted_rrf([sparse, dense], self.weights, self.c)
