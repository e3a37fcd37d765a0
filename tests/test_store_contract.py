"""One contract, two stores: Qdrant Edge (embedded) and qdrant-client (server code path, in-memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.encoders import get_bm25
from store.base import Cond, Filter, PointData, QuerySpec, StoreError, folders_of
from store.factory import Backend

DIM = 4


def _point(pid: str, vec: list[float], text: str, **payload: object) -> PointData:
    return PointData(id=pid, dense=vec, sparse=get_bm25().document(text), payload={"text": text, **payload})


IDS = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(1, 6)]


@pytest.fixture
def filled(backend: Backend):
    store = backend.collection("chunks", DIM, {"embedding_model": "test"})
    store.upsert([
        _point(IDS[0], [1, 0, 0, 0], "qdrant stores vectors on disk", doc_id="a", file_type="pdf",
               folders=folders_of("/notes/work/a.pdf"), ingested_at=100.0),
        _point(IDS[1], [0, 1, 0, 0], "bananas are yellow fruit", doc_id="b", file_type="markdown",
               folders=folders_of("/notes/home/b.md"), ingested_at=200.0),
        _point(IDS[2], [0, 0, 1, 0], "sparse vectors hold bm25 term weights", doc_id="c", file_type="text",
               folders=folders_of("/notes/work/deep/c.txt"), ingested_at=300.0),
    ])
    store.flush()
    return store


def test_dense_sparse_and_fused_queries_rank_the_obvious_match_first(filled) -> None:
    dense = filled.query(QuerySpec(dense=[0.9, 0.1, 0, 0], limit=3))
    assert dense[0].id == IDS[0] and dense[0].score > dense[1].score
    sparse = filled.query(QuerySpec(sparse=get_bm25().query("bananas"), limit=3))
    assert [r.id for r in sparse] == [IDS[1]]
    fused = filled.query(QuerySpec(dense=[0, 0, 1, 0], sparse=get_bm25().query("bm25 weights"), limit=3,
                                   weights=(3.0, 1.0)))
    assert fused[0].id == IDS[2]
    dbsf = filled.query(QuerySpec(dense=[0, 0, 1, 0], sparse=get_bm25().query("bm25"), limit=3, fusion="dbsf"))
    assert dbsf[0].id == IDS[2]


def test_stop_word_only_query_returns_nothing_not_an_error(filled) -> None:
    assert filled.query(QuerySpec(sparse=get_bm25().query("the of and"), limit=3)) == []
    # fused with an empty sparse side degrades to dense alone
    assert filled.query(QuerySpec(dense=[1, 0, 0, 0], sparse=get_bm25().query("the"), limit=1))[0].id == IDS[0]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Filter.eq("doc_id", "b"), {IDS[1]}),
        (Filter(must=(Cond("file_type", "any", ["pdf", "text"]),)), {IDS[0], IDS[2]}),
        (Filter(must=(Cond("folders", "eq", "/notes/work"),)), {IDS[0], IDS[2]}),
        (Filter(must=(Cond("ingested_at", "range", (150.0, 350.0)),)), {IDS[1], IDS[2]}),
        (Filter(must_not=(Cond("doc_id", "eq", "a"),)), {IDS[1], IDS[2]}),
    ],
)
def test_filters_apply_to_every_query_kind(filled, flt: Filter, expected: set[str]) -> None:
    got = {r.id for r in filled.query(QuerySpec(dense=[1, 1, 1, 0], sparse=get_bm25().query("vectors fruit"),
                                                filter=flt, limit=10, prefetch_limit=10))}
    assert got <= expected and got
    assert {r.id for r in filled.scroll(flt)} == expected
    assert filled.count(flt) == len(expected)


def test_delete_set_payload_retrieve(filled) -> None:
    filled.set_payload(Filter.eq("doc_id", "a"), {"path": "/moved/a.pdf"})
    assert filled.retrieve([IDS[0]])[0].payload["path"] == "/moved/a.pdf"
    assert filled.retrieve([IDS[0]])[0].payload["text"] == "qdrant stores vectors on disk"
    filled.delete(Filter.eq("doc_id", "a"))
    filled.delete_ids([IDS[1]])
    filled.flush()
    assert filled.count() == 1
    assert filled.retrieve([IDS[0], IDS[1]]) == []


def test_upsert_is_idempotent_by_id(filled) -> None:
    filled.upsert([_point(IDS[0], [1, 0, 0, 0], "replaced text", doc_id="a")])
    assert filled.count() == 3
    assert filled.retrieve([IDS[0]])[0].payload["text"] == "replaced text"


def test_collection_refuses_another_embedding_model(backend: Backend) -> None:
    backend.collection("chunks", DIM, {"embedding_model": "model-a"})
    backend._collections.pop("chunks").close()  # reopen from storage, as a new process would
    with pytest.raises(StoreError, match="brain reindex"):
        backend.collection("chunks", DIM, {"embedding_model": "model-b"})


def test_edge_store_persists_and_a_second_process_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    b = Backend(root=root)
    store = b.collection("chunks", DIM, {"embedding_model": "test"})
    store.upsert([_point(IDS[0], [1, 0, 0, 0], "persisted", doc_id="a")])
    store.flush()
    probe = textwrap.dedent(f"""
        from store.factory import Backend
        from store.base import StoreLocked
        try:
            Backend(root=__import__('pathlib').Path({str(root)!r}))
        except StoreLocked as e:
            print('LOCKED', e)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=60)
    assert "LOCKED" in out.stdout and "in use by another process" in out.stdout
    # the holder still works after the refused attempt
    store.upsert([_point(IDS[1], [0, 1, 0, 0], "second", doc_id="b")])
    b.close()
    b2 = Backend(root=root)
    assert b2.collection("chunks", DIM, {"embedding_model": "test"}).count() == 2
    b2.close()
