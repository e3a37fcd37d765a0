"""Vector stores (Qdrant Edge embedded, Qdrant server) and the SQLite ingestion manifest."""

from store.base import Cond, Filter, PointData, QuerySpec, Record, Store, StoreError, StoreLocked
from store.factory import Backend, open_backend

__all__ = [
    "Backend", "Cond", "Filter", "PointData", "QuerySpec", "Record", "Store", "StoreError", "StoreLocked",
    "open_backend",
]
