"""`MemoryService`: what the CLI (`brain memory …`) and the app's memory page use to see and correct memory.

It holds the LangGraph store the answer graph uses (`service.store`), so what the user edits here is what the
graph recalls on the next turn. Deleting is forgetting: the memory and the history it superseded are removed,
and a tombstone of its hashed words keeps the extraction model from bringing it back.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable

from langgraph.store.base import BaseStore

from core.encoders import Embedder, get_bm25, get_embedder
from core.settings import Settings
from graphs.memory.consolidate import MemoryWriter
from graphs.memory.extract import Candidate
from graphs.memory.models import KINDS, MemoryItem, memory_namespace, now_utc
from graphs.memory.store import QdrantMemoryStore
from store.factory import Backend, open_backend

EmbedderArg = Embedder | Callable[[], Embedder] | None


def make_memory_store(settings: Settings, backend: Backend, embedder: EmbedderArg = None) -> QdrantMemoryStore:
    """The memories collection of `backend` as a LangGraph store (opened on first use, same encoders as chunks)."""

    def get_model() -> Embedder:
        if isinstance(embedder, Embedder):
            return embedder
        if callable(embedder):
            return embedder()
        return get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)

    store: QdrantMemoryStore

    def collection():  # type: ignore[no-untyped-def]
        model = store.embedder
        return backend.collection(settings.memory_collection, model.dim, {"embedding_model": model.model_id})

    store = QdrantMemoryStore(collection, get_model, get_bm25(), rrf_k=settings.rrf_k,
                              weights=(settings.dense_weight, settings.bm25_weight), prefetch_limit=settings.prefetch_k)
    return store


def _kind(kind: str) -> str:
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


class MemoryService:
    """See, add, edit, search and forget a user's long-term memories."""

    def __init__(self, settings: Settings, backend: Backend | None = None, store: BaseStore | None = None, *,
                 embedder: EmbedderArg = None) -> None:
        """`store`: any LangGraph store (default: the `memories` collection of `backend`, opened from the
        settings when no backend is given). `embedder` (or a factory) shares an already loaded model."""
        self.settings = settings
        self._own_backend: Backend | None = None
        if store is None:
            if backend is None:
                backend = self._own_backend = open_backend(settings)
            store = make_memory_store(settings, backend, embedder)
        self.backend = backend
        self._store = store
        self._embedder = embedder

    @property
    def store(self) -> BaseStore:
        """The LangGraph store to pass to the graph."""
        return self._store

    def _embed(self, texts: builtins.list[str]):  # type: ignore[no-untyped-def]
        if isinstance(self._store, QdrantMemoryStore):
            return self._store.embedder.embed(texts)
        model = self._embedder if isinstance(self._embedder, Embedder) else (
            self._embedder() if callable(self._embedder) else
            get_embedder(self.settings.embedding_model, self.settings.embed_batch_size, self.settings.torch_threads))
        return model.embed(texts)

    def _writer(self, conflict: float | None = None) -> MemoryWriter:
        s = self.settings
        return MemoryWriter(self._store, self._embed, dedupe=s.memory_dedupe_threshold,
                            conflict=s.memory_conflict_threshold if conflict is None else conflict)

    # ------------------------------------------------------------------ reading
    def list(self, user_id: str, include_superseded: bool = False) -> builtins.list[MemoryItem]:
        """The user's memories, newest first (current ones only unless `include_superseded`)."""
        return self._writer().items(user_id, include_superseded)

    def history(self, user_id: str) -> builtins.list[MemoryItem]:
        """Superseded memories (what used to be true), newest first."""
        return [m for m in self._writer().items(user_id, include_superseded=True) if not m.active]

    def search(self, user_id: str, query: str, k: int = 5) -> builtins.list[MemoryItem]:
        """Current memories most similar to `query`, with `score` (cosine similarity)."""
        out = []
        for item, score in self._writer().similar(user_id, query, k=k):
            item.score = score
            out.append(item)
        return out

    def get(self, user_id: str, memory_id: str) -> MemoryItem | None:
        """One memory by id (None when it is not this user's)."""
        return self._writer().get(user_id, memory_id)

    # ------------------------------------------------------------------ writing
    def add(self, user_id: str, text: str, kind: str = "fact") -> MemoryItem:
        """Remember `text` as the user typed it; a near-duplicate of a current memory returns that one."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("a memory needs some text")
        # Typed by the user: merge duplicates, but never retire another memory behind their back.
        outcome = self._writer(conflict=2.0).remember(user_id, Candidate(text, _kind(kind), explicit=True))
        assert outcome.item is not None
        return outcome.item

    def edit(self, user_id: str, memory_id: str, text: str | None = None, kind: str | None = None) -> MemoryItem:
        """Correct a memory in place (its text, its kind, or both)."""
        item = self.get(user_id, memory_id)
        if item is None:
            raise KeyError(f"no memory {memory_id!r} for user {user_id!r}")
        if text is not None:
            text = " ".join(text.split())
            if not text:
                raise ValueError("a memory needs some text")
            item.text = text
        if kind is not None:
            item.kind = _kind(kind)  # type: ignore[assignment]
        item.updated_at = now_utc()
        item.score = None
        self._store.put(memory_namespace(user_id), item.id, item.to_value())
        return item

    def delete(self, user_id: str, memory_id: str) -> None:
        """Forget one memory for good: it and the history it superseded are deleted and not re-extracted."""
        if not self._writer().delete(user_id, memory_id):
            raise KeyError(f"no memory {memory_id!r} for user {user_id!r}")

    def forget(self, user_id: str, about: str) -> builtins.list[MemoryItem]:
        """What "forget that …" does in a chat: delete every memory about `about`; returns what was deleted."""
        return self._writer().forget(user_id, about)

    def close(self) -> None:
        """Release the backend when this service opened it."""
        if self._own_backend is not None:
            self._own_backend.close()
            self._own_backend = None
