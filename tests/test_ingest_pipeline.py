"""Incremental sync against the real embedder and real Qdrant Edge: edits, deletes, renames, copies, bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.pipeline import Ingestor, point_id
from store.base import Filter, QuerySpec
from store.factory import Backend

NOTES = {
    "garden.md": "# Garden\n\nTomatoes need six hours of sun.\n\n## Watering\n\nWater deeply twice a week.",
    "bikes.txt": "My bicycle has a Shimano 105 groupset and 28 mm tyres.\n\nI service it every spring.",
    "recipes/bread.md": "# Sourdough\n\nFeed the starter 12 hours before baking. Bake at 230 °C for 40 minutes.",
}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


@pytest.fixture
def ingestor(settings: Settings, embedder):
    backend = Backend(root=settings.qdrant_path)
    ing = Ingestor(settings, backend, embedder=embedder)
    yield ing
    backend.close()


def _ids(ing: Ingestor, doc_id: str | None = None) -> set[str]:
    flt = Filter.eq("doc_id", doc_id) if doc_id else None
    return {r.id for r in ing.store.scroll(flt)}


def _search(ing: Ingestor, text: str) -> list[dict]:
    vec = ing.embedder.embed_query(text)
    return [r.payload for r in ing.store.query(QuerySpec(dense=vec, sparse=ing.bm25.query(text), limit=3))]


def test_folder_sync_lands_every_file_and_resync_is_a_no_op(ingestor: Ingestor, settings: Settings) -> None:
    inbox = settings.inbox
    _write(inbox, NOTES)
    results = ingestor.sync([inbox])
    assert sorted(r.outcome for r in results) == ["ingested"] * 3
    rows = {Path(r.path).name: r for r in ingestor.manifest.all()}
    assert all(r.status == "done" and r.chunks >= 1 and r.sha256 for r in rows.values())
    assert ingestor.store.count() == sum(r.chunks for r in rows.values())
    top = _search(ingestor, "how often should I water the tomatoes")[0]
    assert top["path"].endswith("garden.md") and top["heading_path"] == ["Garden", "Watering"]
    assert top["embedding_model"] == "all-MiniLM-L6-v2"
    # nothing changed: the fast path does not even hash
    assert ingestor.sync([inbox]) == []
    # touched but identical content: hashed, recognised, not re-embedded
    os.utime(inbox / "bikes.txt", ns=(1, 1))
    assert [r.outcome for r in ingestor.sync([inbox])] == ["unchanged"]


def test_edit_upserts_new_version_before_deleting_old(ingestor: Ingestor, settings: Settings, monkeypatch) -> None:
    inbox = settings.inbox
    _write(inbox, {"bikes.txt": NOTES["bikes.txt"]})
    ingestor.sync([inbox])
    old = ingestor.manifest.get(str(inbox / "bikes.txt"))
    (inbox / "bikes.txt").write_text("My bicycle now has Campagnolo Record and 32 mm tyres.", encoding="utf-8")
    seen_during_delete: list[int] = []
    real_delete = ingestor.store.delete

    def spy(flt: Filter) -> None:
        new = ingestor.manifest.get(str(inbox / "bikes.txt"))
        seen_during_delete.append(len(_ids(ingestor, new.doc_id)))  # the new version is already searchable
        real_delete(flt)

    monkeypatch.setattr(ingestor.store, "delete", spy)
    [result] = ingestor.sync([inbox])
    new = ingestor.manifest.get(str(inbox / "bikes.txt"))
    assert result.outcome == "ingested" and new.doc_version == old.doc_version + 1 and new.doc_id != old.doc_id
    assert seen_during_delete and seen_during_delete[0] >= 1
    assert _ids(ingestor, old.doc_id) == set()
    assert "Campagnolo" in _search(ingestor, "which groupset is on the bike")[0]["text"]


def test_delete_rename_and_duplicate(ingestor: Ingestor, settings: Settings, monkeypatch) -> None:
    inbox = settings.inbox
    _write(inbox, NOTES)
    ingestor.sync([inbox])
    before = ingestor.store.count()
    garden = ingestor.manifest.get(str(inbox / "garden.md"))

    # rename/move: same content, new path → no embedding at all
    monkeypatch.setattr(ingestor.embedder, "embed", lambda *a, **k: pytest.fail("re-embedded a moved file"))
    (inbox / "archive").mkdir()
    shutil.move(inbox / "garden.md", inbox / "archive" / "garden-2024.md")
    results = {r.outcome for r in ingestor.sync([inbox])}
    assert results == {"renamed"}
    assert ingestor.store.count() == before
    payloads = [r.payload for r in ingestor.store.scroll(Filter.eq("doc_id", garden.doc_id))]
    assert all(p["path"].endswith("archive/garden-2024.md") for p in payloads)
    assert ingestor.store.count(Filter.eq("folders", str(inbox / "archive"))) == garden.chunks

    # the same content under a second name is embedded once; both paths are listed
    shutil.copy(inbox / "bikes.txt", inbox / "bikes copy.txt")
    [dup] = ingestor.sync([inbox])
    assert dup.outcome == "duplicate" and ingestor.store.count() == before
    bikes = ingestor.manifest.get(str(inbox / "bikes.txt"))
    paths = next(iter(ingestor.store.scroll(Filter.eq("doc_id", bikes.doc_id)))).payload["paths"]
    assert sorted(Path(p).name for p in paths) == ["bikes copy.txt", "bikes.txt"]

    # deleting one copy keeps the points; deleting the last one removes them
    (inbox / "bikes.txt").unlink()
    assert [r.outcome for r in ingestor.sync([inbox])] == ["deleted"]
    assert len(_ids(ingestor, bikes.doc_id)) == bikes.chunks
    (inbox / "bikes copy.txt").unlink()
    ingestor.sync([inbox])
    assert _ids(ingestor, bikes.doc_id) == set()
    assert ingestor.manifest.get(str(inbox / "bikes.txt")).status == "deleted"


def test_point_ids_are_deterministic() -> None:
    assert point_id("abc", 3) == point_id("abc", 3) != point_id("abc", 4)
