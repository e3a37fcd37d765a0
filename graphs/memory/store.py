"""`QdrantMemoryStore`: LangGraph's `BaseStore` over the project's `Store` protocol (Qdrant Edge or a server).

Memories sit in their own Qdrant collection beside the chunks, with the same `dense` + `bm25` vectors, so a
search with a query is the same hybrid search as document retrieval (RRF inside Qdrant), and server mode
scales them with everything else. Nodes use the standard `store.put / get / search / delete`, so the app can
swap in any LangGraph store (`InMemoryStore`, `PostgresStore`, ...).

Layout of a point: id = uuid5(namespace, key); payload `namespace` holds every prefix of the item's namespace
(a keyword index, so a namespace prefix is one exact-match filter) and, when its vectors hold its text, the same
prefixes tagged as searchable (an item put with `index=False` gets a placeholder vector and is never returned by
a query search); `ns`/`key`/`value` are the item itself. Keeping both in one indexed field matters: a filter on
an unindexed payload key cost ~3 ms a query at 1,000 memories on Qdrant Edge (measured), most of recall's budget.
A `SearchItem.score` is the dense cosine similarity of the item to the query
(0 when only its words matched); the order is the hybrid fusion's.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from core.encoders import Bm25Encoder, Embedder, get_bm25
from store.base import Cond, Filter, PointData, QuerySpec, Record, Store

_ITEM_NAMESPACE = uuid.UUID("0b9d8f5e-3c1a-4f6e-9a57-6d2e1c4b7a90")
_SEP = "\x1f"  # joins namespace labels in the payload; cannot occur in a label someone types
_SEARCHABLE = "\x1d"  # tags a namespace prefix of an item whose vectors hold its text
DEFAULT_INDEX_FIELDS = ("text",)


def point_id(namespace: tuple[str, ...], key: str) -> str:
    """The Qdrant point id of item `key` in `namespace` (deterministic: a put overwrites, never duplicates)."""
    return str(uuid.uuid5(_ITEM_NAMESPACE, _SEP.join(namespace) + "\x1e" + key))


def namespace_prefixes(namespace: Sequence[str], searchable: bool = False) -> list[str]:
    """Every prefix of a namespace, joined: `("u", "memories")` → `["u", "u␟memories"]`; with `searchable`,
    also each tagged for query searches (and the bare tag, for a query over every namespace)."""
    plain = [_SEP.join(namespace[: i + 1]) for i in range(len(namespace))]
    return [*plain, _SEARCHABLE, *(p + _SEARCHABLE for p in plain)] if searchable else plain


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    return datetime.fromisoformat(str(value))


def value_filter(flt: dict[str, Any] | None) -> Filter:
    """LangGraph's value filter as a payload filter: `{"kind": "fact", "n": {"$gte": 2}, "k": {"$in": [...]}}`.

    Supported operators: `$eq`, `$ne`, `$in`, `$nin`, `$gt`/`$gte`/`$lt`/`$lte` (numbers); a plain value is `$eq`.
    """
    must: list[Cond] = []
    must_not: list[Cond] = []
    for key, spec in (flt or {}).items():
        path = f"value.{key}"
        ops = spec if isinstance(spec, dict) and spec and all(str(k).startswith("$") for k in spec) else {"$eq": spec}
        for op, arg in ops.items():
            if op == "$eq":
                must.append(Cond(path, "eq", arg))
            elif op == "$ne":
                must_not.append(Cond(path, "eq", arg))
            elif op == "$in":
                must.append(Cond(path, "any", list(arg)))
            elif op == "$nin":
                must_not.append(Cond(path, "any", list(arg)))
            elif op in ("$gt", "$gte"):
                must.append(Cond(path, "range", (float(arg), None)))
                if op == "$gt":
                    must_not.append(Cond(path, "eq", arg))
            elif op in ("$lt", "$lte"):
                must.append(Cond(path, "range", (None, float(arg))))
                if op == "$lt":
                    must_not.append(Cond(path, "eq", arg))
            else:
                raise ValueError(f"unsupported filter operator {op!r} on {key!r}")
    return Filter(must=tuple(must), must_not=tuple(must_not))


def _matches(value: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """The same filter in Python (checked again after Qdrant, so both engines agree on edge cases)."""
    for key, spec in (flt or {}).items():
        got = value.get(key)
        ops = spec if isinstance(spec, dict) and spec and all(str(k).startswith("$") for k in spec) else {"$eq": spec}
        for op, arg in ops.items():
            ok = {
                "$eq": lambda g, a: g == a, "$ne": lambda g, a: g != a,
                "$in": lambda g, a: g in a, "$nin": lambda g, a: g not in a,
                "$gt": lambda g, a: g is not None and g > a, "$gte": lambda g, a: g is not None and g >= a,
                "$lt": lambda g, a: g is not None and g < a, "$lte": lambda g, a: g is not None and g <= a,
            }[op](got, arg)
            if not ok:
                return False
    return True


def _namespace_matches(ns: tuple[str, ...], cond: MatchCondition) -> bool:
    path = tuple(cond.path)
    if len(path) > len(ns):
        return False
    part = ns[: len(path)] if cond.match_type == "prefix" else ns[len(ns) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


class QdrantMemoryStore(BaseStore):
    """A LangGraph store whose items are points of one Qdrant collection (dense + bm25, hybrid search)."""

    def __init__(self, collection: Store | Callable[[], Store], embedder: Embedder | Callable[[], Embedder],
                 bm25: Bm25Encoder | None = None, *, rrf_k: int = 60, weights: tuple[float, float] = (1.0, 1.0),
                 prefetch_limit: int = 50, index_fields: Sequence[str] = DEFAULT_INDEX_FIELDS) -> None:
        """`collection` and `embedder` may be factories: the collection (and the model) open on first use."""
        self._collection_arg = collection
        self._embedder_arg = embedder
        self._collection: Store | None = None
        self._embedder: Embedder | None = None
        self.bm25 = bm25 or get_bm25()
        self.rrf_k = rrf_k
        self.weights = weights
        self.prefetch_limit = prefetch_limit
        self.index_fields = tuple(index_fields)
        self._open_lock = threading.Lock()

    # ------------------------------------------------------------------ lazy collaborators
    @property
    def embedder(self) -> Embedder:
        """The dense encoder (the same model as the chunks collection)."""
        if self._embedder is None:
            with self._open_lock:
                if self._embedder is None:
                    arg = self._embedder_arg
                    self._embedder = arg if isinstance(arg, Embedder) else arg()  # type: ignore[operator]
        return self._embedder  # type: ignore[return-value]

    @property
    def collection(self) -> Store:
        """The Qdrant collection that holds the items."""
        if self._collection is None:
            arg = self._collection_arg
            opened = arg() if callable(arg) and not hasattr(arg, "query") else arg
            with self._open_lock:
                if self._collection is None:
                    self._collection = opened  # type: ignore[assignment]
        return self._collection  # type: ignore[return-value]

    # ------------------------------------------------------------------ BaseStore
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order; consecutive puts are embedded together and written in one upsert."""
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        encoded: dict[str, tuple[list[float], Any]] = {}  # a query searched twice in one batch is encoded once
        i = 0
        while i < len(ops):
            op = ops[i]
            if isinstance(op, PutOp):
                j = i
                while j < len(ops) and isinstance(ops[j], PutOp):
                    j += 1
                self._put(ops[i:j])  # type: ignore[arg-type]
                i = j
                continue
            if isinstance(op, GetOp):
                results[i] = self._get(op)
            elif isinstance(op, SearchOp):
                results[i] = self._search(op, encoded)
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op)
            else:
                raise TypeError(f"unknown store operation {type(op).__name__}")
            i += 1
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in a worker thread (Qdrant Edge is synchronous)."""
        return await asyncio.to_thread(self.batch, list(ops))

    # ------------------------------------------------------------------ operations
    def _get(self, op: GetOp) -> Item | None:
        records = self.collection.retrieve([point_id(tuple(op.namespace), op.key)])
        rec = next((r for r in records if tuple(r.payload.get("ns", ())) == tuple(op.namespace)), None)
        return self._item(rec) if rec is not None else None

    def _put(self, ops: Sequence[PutOp]) -> None:
        # Later ops on the same item win, as in LangGraph's own stores.
        last: dict[str, PutOp] = {}
        for op in ops:
            last[point_id(tuple(op.namespace), op.key)] = op
        deletes = [pid for pid, op in last.items() if op.value is None]
        writes = {pid: op for pid, op in last.items() if op.value is not None}
        store = self.collection
        if deletes:
            store.delete_ids(deletes)
        if writes:
            existing = {r.id: r.payload for r in store.retrieve(list(writes))}
            now = datetime.now(UTC)
            texts: list[str] = []
            slots: list[str] = []
            for pid, op in writes.items():
                text = self._index_text(op)
                if text is not None:
                    texts.append(text)
                    slots.append(pid)
            dense = dict(zip(slots, self.embedder.embed(texts).tolist(), strict=True)) if texts else {}
            sparse = {pid: self.bm25.document(t) for pid, t in zip(slots, texts, strict=True)}
            points = []
            for pid, op in writes.items():
                ns = tuple(op.namespace)
                created = (existing.get(pid) or {}).get("created_at") or now.isoformat()
                payload = {"namespace": namespace_prefixes(ns, searchable=pid in dense), "ns": list(ns),
                           "key": op.key, "value": op.value, "created_at": created, "updated_at": now.isoformat(),
                           "updated_ts": now.timestamp()}
                vec = dense.get(pid) or self._placeholder()
                points.append(PointData(id=pid, dense=vec, sparse=sparse.get(pid, ([], [])), payload=payload))
            store.upsert(points)
        store.flush()

    def _index_text(self, op: PutOp) -> str | None:
        """The text embedded for an item, or None when it is stored without an index."""
        index = getattr(op, "index", None)
        if index is False:
            return None
        fields = tuple(index) if isinstance(index, (list, tuple)) else self.index_fields
        parts = [str(op.value.get(f)) for f in fields if op.value and op.value.get(f) not in (None, "")]  # type: ignore[union-attr]
        return " ".join(parts) if parts else None

    def _placeholder(self) -> list[float]:
        # A unit vector: cosine needs a non-zero one. Untagged namespaces keep it out of every query search.
        vec = [0.0] * self.embedder.dim
        vec[0] = 1.0
        return vec

    def _filter(self, prefix: tuple[str, ...], flt: dict[str, Any] | None, searchable: bool = False) -> Filter:
        tag = _SEARCHABLE if searchable else ""
        base = Filter.eq("namespace", _SEP.join(prefix) + tag) if prefix or searchable else Filter()
        return base.and_(value_filter(flt))

    def _search(self, op: SearchOp, encoded: dict[str, tuple[list[float], Any]] | None = None) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        query = getattr(op, "query", None)
        flt = self._filter(prefix, op.filter, searchable=bool(query and query.strip()))
        if not query or not query.strip():
            # Filter-only: newest first (what a memory list wants), then offset/limit.
            records = [r for r in self.collection.scroll(flt) if _matches(r.payload.get("value") or {}, op.filter)]
            records.sort(key=lambda r: float(r.payload.get("updated_ts") or 0.0), reverse=True)
            return [self._item(r, score=None) for r in records[op.offset: op.offset + op.limit]]  # type: ignore[misc]
        encoded = {} if encoded is None else encoded
        if query not in encoded:
            encoded[query] = (self.embedder.embed_query(query), self.bm25.query(query))
        dense, terms = encoded[query]
        want = op.offset + op.limit
        prefetch = max(self.prefetch_limit, want)
        fused, nearest = self.collection.query_many([
            QuerySpec(dense=dense, sparse=terms, filter=flt, limit=want, prefetch_limit=prefetch, rrf_k=self.rrf_k,
                      weights=self.weights),
            QuerySpec(dense=dense, filter=flt, limit=prefetch),
        ])
        cosine = {r.id: r.score for r in nearest}
        hits = [r for r in fused if _matches(r.payload.get("value") or {}, op.filter)][op.offset: want]
        return [self._item(r, score=cosine.get(r.id, 0.0)) for r in hits]  # type: ignore[misc]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        seen: set[tuple[str, ...]] = set()
        for rec in self.collection.scroll():
            ns = tuple(rec.payload.get("ns") or ())
            if not ns or not all(_namespace_matches(ns, c) for c in op.match_conditions or ()):
                continue
            seen.add(ns[: op.max_depth] if op.max_depth is not None else ns)
        return sorted(seen)[op.offset: op.offset + op.limit]

    @staticmethod
    def _item(rec: Record, score: float | None = ...) -> Item:  # type: ignore[assignment]
        p = rec.payload
        common = {"namespace": tuple(p.get("ns") or ()), "key": str(p.get("key")), "value": dict(p.get("value") or {}),
                  "created_at": _ts(p.get("created_at")), "updated_at": _ts(p.get("updated_at"))}
        if score is ...:
            return Item(**common)
        return SearchItem(**common, score=score)

    # ------------------------------------------------------------------ extras (not part of BaseStore)
    def count(self, namespace_prefix: tuple[str, ...] = ()) -> int:
        """Items under a namespace prefix (cheap: a payload-index count)."""
        prefix = tuple(namespace_prefix)
        return self.collection.count(Filter.eq("namespace", _SEP.join(prefix)) if prefix else None)
