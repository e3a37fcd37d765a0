"""The two encoders shared by ingestion and retrieval: dense (sentence-transformers) and BM25 terms.

Both sides of the index must use the same encoder, so there is exactly one of each here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from qdrant_edge import Bm25

from core.models import model_id, resolve_embedding_model

log = logging.getLogger(__name__)

SparseTerms = tuple[list[int], list[float]]


class Embedder:
    """A lazily loaded sentence-transformers model, with its own tokenizer for chunk budgets."""

    def __init__(self, name: str, batch_size: int = 32, threads: int | None = None) -> None:
        self.name = name
        self.model_id = model_id(name)
        self.batch_size = batch_size
        self._threads = threads
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def model(self):
        """The loaded `SentenceTransformer` (first use loads it)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    import torch
                    from sentence_transformers import SentenceTransformer

                    if self._threads:
                        torch.set_num_threads(self._threads)
                    self._model = SentenceTransformer(resolve_embedding_model(self.name), device="cpu")
        return self._model

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads, in its own tokens (specials excluded)."""
        return int(self.model.max_seq_length) - 2

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts in the embedder's own tokenizer, without special tokens."""
        if not texts:
            return []
        tok = self._fast_tokenizer()
        return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]

    def _fast_tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = Path(resolve_embedding_model(self.name)) / "tokenizer.json"
            if path.exists():
                tok = Tokenizer.from_file(str(path))
                tok.no_truncation()
                tok.no_padding()
                self._tokenizer = tok
            else:  # a hub model: borrow the loaded model's fast tokenizer
                self._tokenizer = self.model.tokenizer.backend_tokenizer
        return self._tokenizer

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Unit-normalised float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        ).astype(np.float32)

    def embed_query(self, text: str) -> list[float]:
        """One query vector."""
        return self.embed([text])[0].tolist()


class Bm25Encoder:
    """BM25 term weights (English tokenizer, stop words, Snowball stemming) for the `bm25` sparse vector.

    Documents get saturated term frequencies; IDF is applied by Qdrant at query time from live
    collection statistics, so adding or deleting documents never needs a rebuild.
    """

    def __init__(self) -> None:
        self._bm25 = Bm25()

    def document(self, text: str) -> SparseTerms:
        """Sparse terms for an indexed passage."""
        v = self._bm25.embed_document(text)
        return list(v.indices), list(v.values)

    def query(self, text: str) -> SparseTerms:
        """Sparse terms for a query (each unique term weight 1.0)."""
        v = self._bm25.embed_query(text)
        return list(v.indices), list(v.values)


@lru_cache(maxsize=4)
def get_embedder(name: str, batch_size: int = 32, threads: int | None = None) -> Embedder:
    """One shared embedder per model name in a process."""
    return Embedder(name, batch_size=batch_size, threads=threads)


@lru_cache(maxsize=1)
def get_bm25() -> Bm25Encoder:
    """The shared BM25 encoder."""
    return Bm25Encoder()
