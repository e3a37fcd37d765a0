"""Cross-encoder reranking of the fused candidates, with a clear fallback when no model loads.

No PyPI package ships cross-encoder weights, so on an offline machine the model may be absent:
then the fused order is kept, one log line says why, and `status` tells the UI.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from core.types import Hit

log = logging.getLogger(__name__)


class Reranker:
    """A sentence-transformers `CrossEncoder` over (query, passage) pairs, loaded on first use."""

    def __init__(self, model: str | None, batch_size: int = 16, max_length: int | None = 256) -> None:
        self.model_name = model
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = None
        self._error: str | None = None if model else "no reranker model configured (RERANKER_MODEL)"
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_model(cls, model: object, name: str = "in-memory", batch_size: int = 16) -> Reranker:
        """Wrap an already loaded `CrossEncoder` (tests, training scripts)."""
        r = cls(name, batch_size=batch_size)
        r._model = model
        return r

    def _load(self) -> object | None:
        if self._model is not None or self._error is not None:
            return self._model
        with self._lock:
            if self._model is None and self._error is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import CrossEncoder

                    self._model = CrossEncoder(self.model_name, device="cpu", max_length=self.max_length)
                except Exception as exc:  # missing files, no hub, wrong architecture: all mean "no reranker"
                    self._error = f"cannot load {self.model_name!r}: {type(exc).__name__}: {str(exc)[:200]}"
        return self._model

    @property
    def available(self) -> bool:
        """Whether a model is loaded (loads it if needed)."""
        return self._load() is not None

    @property
    def status(self) -> str:
        """`active: <model>` or `unavailable: <reason>`, for the UI and logs."""
        return f"active: {self.model_name}" if self.available else f"unavailable: {self._error}"

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Hits reordered by cross-encoder score (stored as `rerank`); the input order if no model loads."""
        model = self._load()
        if model is None:
            if not self._warned:
                log.warning("reranker %s; keeping the fused order", self.status)
                self._warned = True
            return list(hits)[:top_k] if top_k else list(hits)
        if not hits:
            return []
        scores = model.predict([(query, h.text) for h in hits], batch_size=self.batch_size,  # type: ignore[attr-defined]
                               show_progress_bar=False, convert_to_numpy=True)
        for h, s in zip(hits, scores, strict=True):
            h.scores["rerank"] = float(s)
        ranked = sorted(hits, key=lambda h: h.scores["rerank"], reverse=True)
        return ranked[:top_k] if top_k else ranked
