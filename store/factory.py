"""Open the configured backend: embedded Qdrant Edge by default, a Qdrant server when `QDRANT_URL` is set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from store.base import Store, StoreError
from store.edge import EdgeLock, EdgeStore


class Backend:
    """Owns the connection (or the embedded directory lock) and hands out collections."""

    def __init__(self, *, root: Path | None = None, url: str | None = None, api_key: str | None = None) -> None:
        self._collections: dict[str, Store] = {}
        self.root = root
        self.url = url
        self._lock: EdgeLock | None = None
        self._client: Any = None
        if url:
            from qdrant_client import QdrantClient

            self._client = (QdrantClient(location=":memory:") if url == ":memory:"
                            else QdrantClient(url=url, api_key=api_key))
        elif root is not None:
            self._lock = EdgeLock(root)
            self._lock.acquire()
        else:
            raise ValueError("a backend needs a directory or a URL")

    @property
    def kind(self) -> str:
        """`embedded` or `server`."""
        return "server" if self.url else "embedded"

    def collection(self, name: str, dim: int, meta: dict[str, Any]) -> Store:
        """Open (creating if needed) a collection; refuses one built with another embedding model."""
        if name in self._collections:
            return self._collections[name]
        if self._client is not None:
            from store.server import ServerStore

            store: Store = ServerStore(self._client, name, dim, meta)
        else:
            assert self.root is not None
            store = EdgeStore(self.root, name, dim, meta, self._lock)  # type: ignore[arg-type]
        existing = store.meta()
        want = meta.get("embedding_model")
        if want and existing.get("embedding_model") not in (None, want):
            raise StoreError(
                f"collection {name!r} was built with embedding model {existing.get('embedding_model')!r}, "
                f"but EMBEDDING_MODEL is {want!r}. Run `brain reindex` to rebuild it with the new model."
            )
        self._collections[name] = store
        return store

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its points (used by re-index)."""
        store = self._collections.pop(name, None)
        if store is not None:
            store.close()
        if self._client is not None:
            if self._client.collection_exists(name):
                self._client.delete_collection(name)
            return
        assert self.root is not None
        shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / f"{name}.meta.json").unlink(missing_ok=True)

    def close(self) -> None:
        """Close every collection and release the lock."""
        for store in self._collections.values():
            store.close()
        self._collections.clear()
        if self._client is not None:
            self._client.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(settings: Any) -> Backend:
    """The backend the settings ask for."""
    if settings.qdrant_url:
        return Backend(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    path = Path(settings.qdrant_path)
    try:
        return Backend(root=path)
    except OSError as exc:
        raise StoreError(f"cannot open the embedded store at {path}: {exc}") from exc
