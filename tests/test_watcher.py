"""The drop-folder worker against a real folder: new, edited, deleted files, a burst of 1,000, and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.pipeline import Ingestor
from ingest.worker import FolderWatcher
from store.factory import Backend


def _wait(cond: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def running(settings: Settings, embedder):
    backend = Backend(root=settings.qdrant_path)
    ingestor = Ingestor(settings, backend, embedder=embedder)
    watcher = FolderWatcher(ingestor, settings.inbox, debounce_ms=300).start()
    assert watcher.synced.wait(120), "the first sync did not finish"
    yield ingestor, watcher
    watcher.stop()
    backend.close()


def _status(ing: Ingestor, path: Path) -> str | None:
    row = ing.manifest.get(str(path.resolve()))
    return row.status if row else None


def test_watcher_follows_new_edited_and_deleted_files(running, settings: Settings) -> None:
    ingestor, _ = running
    note = settings.inbox / "idea.md"
    note.write_text("# Idea\n\nA bird feeder that photographs visitors.", encoding="utf-8")
    _wait(lambda: _status(ingestor, note) == "done")
    v1 = ingestor.manifest.get(str(note.resolve()))
    note.write_text("# Idea\n\nA bird feeder that identifies species by song.", encoding="utf-8")
    _wait(lambda: ingestor.manifest.get(str(note.resolve())).doc_version == v1.doc_version + 1
          and _status(ingestor, note) == "done")
    note.unlink()
    _wait(lambda: _status(ingestor, note) == "deleted")
    assert ingestor.store.count() == 0


def test_burst_of_1000_files(running, settings: Settings) -> None:
    ingestor, _ = running
    burst = settings.inbox / "burst"
    burst.mkdir()
    for i in range(1000):
        (burst / f"n{i:04d}.txt").write_text(f"Short note number {i} about item {i * 7 % 113}.", encoding="utf-8")
    _wait(lambda: ingestor.manifest.counts()["done"] == 1000, timeout=600)
    assert ingestor.store.count() == 1000
    assert ingestor.manifest.counts()["failed"] == 0


def test_restart_resumes_the_queue_and_catches_up_with_changes(settings: Settings, embedder) -> None:
    inbox = settings.inbox
    for i in range(3):
        (inbox / f"a{i}.md").write_text(f"# A{i}\n\nfirst batch note {i}", encoding="utf-8")
    backend = Backend(root=settings.qdrant_path)
    ingestor = Ingestor(settings, backend, embedder=embedder)
    ingestor.sync([inbox])
    # a previous process queued work and died; meanwhile a file was deleted and one added while it was down
    (inbox / "late.md").write_text("# Late\n\narrived while the worker was down", encoding="utf-8")
    st = (inbox / "late.md").stat()
    ingestor.manifest.enqueue(str((inbox / "late.md").resolve()), st.st_size, st.st_mtime_ns)
    (inbox / "a0.md").unlink()
    backend.close()

    backend = Backend(root=settings.qdrant_path)
    try:
        ingestor = Ingestor(settings, backend, embedder=embedder)
        results = FolderWatcher(ingestor, inbox).sync_once()
        outcomes = sorted((Path(r.path).name, r.outcome) for r in results)
        assert outcomes == [("a0.md", "deleted"), ("late.md", "ingested")]
        assert ingestor.manifest.counts()["done"] == 3
    finally:
        backend.close()
