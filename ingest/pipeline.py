"""Incremental, crash-safe sync of files into the `chunks` collection.

Unchanged files are skipped by size + mtime (then by hash); an edited file's new version is upserted
before the old version's points are deleted, so the document is never missing from search; a moved
file keeps its points (only the path payload changes); the same content under two names is embedded
once. Point ids are derived from the content hash and chunk index, so re-running an interrupted
document after `kill -9` overwrites its own points instead of duplicating them.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.encoders import Embedder, get_bm25, get_embedder
from core.settings import Settings
from core.types import Chunk, Document, IngestError
from ingest.chunking import Chunker, embedding_text
from ingest.loaders import load_document
from ingest.scan import sha256_file, walk
from store.base import Filter, PointData, Store, folders_of
from store.factory import Backend
from store.ids import doc_id_for, point_id
from store.manifest import FileRow, Manifest

log = logging.getLogger(__name__)

UPSERT_BATCH = 64
MAX_PENDING_FILES = 32
TRAIL_RESERVE = 32  # tokens kept free for the title/heading trail prepended at embedding time


@dataclass
class FileResult:
    """What happened to one file in a sync."""

    path: str
    outcome: str  # ingested | unchanged | renamed | duplicate | deleted | failed
    reason: str = ""
    chunks: int = 0
    pages: int | None = None
    seconds: float = 0.0


@dataclass
class _Pending:
    """A loaded, chunked file waiting to be embedded with its batch."""

    key: str
    row: FileRow
    doc: Document
    chunks: list[Chunk]
    doc_id: str
    version: int
    started: float


Progress = Callable[[int, int, FileResult | None, str], None]


def _noop(done: int, total: int, result: FileResult | None, current: str) -> None:
    return None


class Ingestor:
    """Owns the chunks collection and the manifest for one process."""

    def __init__(self, settings: Settings, backend: Backend, manifest: Manifest | None = None,
                 embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.manifest = manifest or Manifest(settings.manifest_path)
        self.embedder = embedder or get_embedder(settings.embedding_model, settings.embed_batch_size,
                                                 settings.torch_threads)
        self.bm25 = get_bm25()
        self._store: Store | None = None
        budget = min(settings.chunk_tokens, self.embedder.max_tokens - TRAIL_RESERVE)
        self.chunker = Chunker(self.embedder.count_tokens, budget, settings.chunk_overlap)

    @property
    def store(self) -> Store:
        """The chunks collection (opened on first use: creating it needs the model's width)."""
        if self._store is None:
            self._store = self.backend.collection(
                self.settings.collection, self.embedder.dim, {"embedding_model": self.embedder.model_id}
            )
        return self._store

    # ------------------------------------------------------------------ planning
    def scan(self, roots: Sequence[Path]) -> tuple[list[Path], list[str]]:
        """Files that need work under `roots`, and known paths under folder roots that are gone from disk.

        The fast path compares size and mtime only, so a no-change re-sync never reads file contents.
        """
        changed: list[Path] = []
        seen: set[str] = set()
        for p in walk(roots):
            key = str(p)
            seen.add(key)
            try:
                st = p.stat()
            except OSError:
                continue
            row = self.manifest.get(key)
            if row and row.status in ("done", "failed") and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
                continue
            changed.append(p)
        gone: list[str] = []
        for root in roots:
            root = root.expanduser().resolve()
            rows = self.manifest.under(str(root)) if root.is_dir() or not root.exists() else []
            if not root.exists():
                row = self.manifest.get(str(root))
                rows = rows + ([row] if row and row.status != "deleted" else [])
            gone.extend(r.path for r in rows if r.path not in seen and not Path(r.path).exists())
        return changed, gone

    def sync(self, roots: Sequence[Path], progress: Progress = _noop) -> list[FileResult]:
        """Bring the index in line with the files under `roots` (files or folders)."""
        changed, gone = self.scan(roots)
        return self.apply(changed, gone, progress)

    def resume(self, progress: Progress = _noop) -> list[FileResult]:
        """Finish work a previous process left queued or half-done (after a crash or restart)."""
        pending = [Path(r.path) for r in self.manifest.by_status("queued", "ingesting")]
        present = [p for p in pending if p.exists()]
        missing = [str(p) for p in pending if not p.exists()]
        return self.apply(present, missing, progress)

    # ------------------------------------------------------------------ applying
    def apply(self, changed: Iterable[Path], gone: Iterable[str], progress: Progress = _noop) -> list[FileResult]:
        """Process changed files, then paths that disappeared (renames are matched by content first)."""
        changed = list(dict.fromkeys(Path(p).resolve() for p in changed))
        gone_set = {str(g) for g in gone if str(g) not in {str(c) for c in changed}}
        for p in changed:
            try:
                st = p.stat()
            except OSError:
                continue
            self.manifest.enqueue(str(p), st.st_size, st.st_mtime_ns)
        results: list[FileResult] = []
        total = len(changed) + len(gone_set)
        pending: list[_Pending] = []

        def commit() -> None:
            for result in self._commit(pending):
                results.append(result)
                progress(len(results), total, result, result.path)
            pending.clear()

        for p in changed:
            progress(len(results), total, None, str(p))
            outcome = self._process(p, gone_set, {q.doc_id for q in pending}, commit)
            if isinstance(outcome, _Pending):
                pending.append(outcome)
                # small files are embedded together: one model call and one flush per batch, not per file
                if sum(len(q.chunks) for q in pending) >= UPSERT_BATCH or len(pending) >= MAX_PENDING_FILES:
                    commit()
            else:
                results.append(outcome)
                progress(len(results), total, outcome, str(p))
        commit()
        for g in sorted(gone_set):
            results.append(self.remove(g))
            progress(len(results), total, results[-1], g)
        return results

    def _process(self, path: Path, gone: set[str], pending_docs: set[str],
                 commit: Callable[[], None]) -> FileResult | _Pending:
        key = str(path)
        started = time.time()
        row = self.manifest.get(key) or FileRow(path=key)
        try:
            st = path.stat()
            sha = sha256_file(path)
        except OSError as exc:
            return self._fail(key, f"cannot read file: {exc.strerror or exc}", started)
        doc_id = doc_id_for(sha)
        if doc_id in pending_docs:  # the same content is in the uncommitted batch: land it first, then dedupe
            commit()
        if row.doc_id == doc_id and row.status in ("done", "queued", "ingesting") and row.chunks:
            self.manifest.update(key, status="done", sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                 finished_at=time.time())
            return FileResult(key, "unchanged", chunks=row.chunks, pages=row.pages)
        twins = [r for r in self.manifest.with_doc(doc_id) if r.path != key]
        if twins:
            moved = next((t for t in twins if t.path in gone), None)
            if moved is not None:
                gone.discard(moved.path)
                self.manifest.rename(moved.path, key)
                self.manifest.update(key, size=st.st_size, mtime_ns=st.st_mtime_ns, status="done")
                self._refresh_paths(doc_id)
                self._release(row, keep=doc_id)
                return FileResult(key, "renamed", f"moved from {moved.path}", moved.chunks, moved.pages)
            twin = twins[0]
            self.manifest.put(FileRow(
                path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, doc_id=doc_id,
                doc_version=row.doc_version + 1, status="done", chunks=twin.chunks, pages=twin.pages,
                title=twin.title, file_type=twin.file_type, warnings=f"same content as {twin.path}; indexed once",
                queued_at=row.queued_at, started_at=started, finished_at=time.time(), seconds=0.0))
            self._refresh_paths(doc_id)
            self._release(row, keep=doc_id)
            return FileResult(key, "duplicate", f"same content as {twin.path}", twin.chunks, twin.pages)
        return self._prepare(path, row, sha, st.st_size, st.st_mtime_ns, started)

    def _prepare(self, path: Path, row: FileRow, sha: str, size: int, mtime_ns: int,
                 started: float) -> FileResult | _Pending:
        """Load and chunk one file; embedding happens in `_commit`, batched with its neighbours."""
        key = str(path)
        doc_id = doc_id_for(sha)
        version = row.doc_version + 1
        self.manifest.update(key, status="ingesting", sha256=sha, size=size, mtime_ns=mtime_ns,
                             started_at=started, error=None)
        try:
            doc = load_document(path, max_file_mb=self.settings.max_file_mb,
                                max_docx_uncompressed_mb=self.settings.max_docx_uncompressed_mb)
            chunks = self.chunker.chunk(doc, doc_id, key, version)
            if not chunks:
                raise IngestError("no text to index")
        except IngestError as exc:
            return self._fail(key, str(exc), started)
        except Exception as exc:  # a bug must not stop the other files
            log.error("loading %s failed:\n%s", key, traceback.format_exc())
            return self._fail(key, f"internal error: {type(exc).__name__}: {exc}", started)
        return _Pending(key, row, doc, chunks, doc_id, version, started)

    def _commit(self, batch: list[_Pending]) -> list[FileResult]:
        """Embed, upsert and flush a batch of documents, then mark them done and retire old versions."""
        if not batch:
            return []
        try:
            self._write([c for q in batch for c in q.chunks])
        except Exception as exc:  # a store fault fails this batch with a reason; the next batch still runs
            log.error("writing a batch failed:\n%s", traceback.format_exc())
            return [self._fail(q.key, f"internal error: {type(exc).__name__}: {exc}", q.started) for q in batch]
        results = []
        for q in batch:
            seconds = time.time() - q.started
            self.manifest.update(q.key, status="done", doc_id=q.doc_id, doc_version=q.version, chunks=len(q.chunks),
                                 pages=q.doc.pages, title=q.doc.title, file_type=q.doc.file_type,
                                 warnings="; ".join(q.doc.warnings) or None, finished_at=time.time(),
                                 seconds=seconds)
            self._release(q.row, keep=q.doc_id)
            results.append(FileResult(q.key, "ingested", "; ".join(q.doc.warnings), len(q.chunks), q.doc.pages,
                                      seconds))
        return results

    def add_document(self, doc: Document, key: str) -> int:
        """Index an already loaded document under a virtual path (benchmarks, corpora); returns its chunk count."""
        doc_id = doc_id_for(hashlib.sha256(doc.text.encode("utf-8")).hexdigest())
        chunks = self.chunker.chunk(doc, doc_id, key)
        if chunks:
            self._write(chunks, flush=False)
        self.manifest.put(FileRow(path=key, sha256=doc_id, doc_id=doc_id, doc_version=1, status="done",
                                  chunks=len(chunks), title=doc.title, file_type=doc.file_type,
                                  finished_at=time.time()))
        return len(chunks)

    def _write(self, chunks: list[Chunk], flush: bool = True) -> None:
        """Embed and upsert in batches, then make the document durable."""
        now = time.time()
        folders = {c.path: folders_of(c.path) for c in chunks}
        for i in range(0, len(chunks), UPSERT_BATCH):
            batch = chunks[i : i + UPSERT_BATCH]
            texts = [embedding_text(c) for c in batch]
            vectors = self.embedder.embed(texts)
            points = [
                PointData(
                    id=point_id(c.doc_id, c.chunk_index),
                    dense=vec,
                    sparse=self.bm25.document(text),
                    payload={**c.payload(), "folders": folders[c.path], "ingested_at": now,
                             "embedding_model": self.embedder.model_id},
                )
                for c, vec, text in zip(batch, vectors, texts, strict=True)
            ]
            self.store.upsert(points)
        if flush:
            self.store.flush()

    def _fail(self, key: str, reason: str, started: float) -> FileResult:
        self.manifest.update(key, status="failed", error=reason, finished_at=time.time(),
                             seconds=time.time() - started)
        return FileResult(key, "failed", reason, seconds=time.time() - started)

    # ------------------------------------------------------------------ removal and payload upkeep
    def _release(self, row: FileRow, keep: str | None = None) -> None:
        """Drop the points of a path's previous version unless another path still shows that content."""
        old = row.doc_id
        if not old or old == keep:
            return
        if self.manifest.with_doc(old):
            self._refresh_paths(old)
        else:
            self.store.delete(Filter.eq("doc_id", old))
            self.store.flush()

    def _refresh_paths(self, doc_id: str) -> None:
        paths = sorted(r.path for r in self.manifest.with_doc(doc_id))
        if not paths:
            return
        folders = sorted({f for p in paths for f in folders_of(p)})
        self.store.set_payload(Filter.eq("doc_id", doc_id), {"path": paths[0], "paths": paths, "folders": folders})
        self.store.flush()

    def remove(self, path: str) -> FileResult:
        """Forget a path: its points go unless the same content lives on under another name."""
        row = self.manifest.get(path)
        if row is None or row.status == "deleted":
            return FileResult(path, "deleted", "not in the library")
        self.manifest.update(path, status="deleted", finished_at=time.time())
        self._release(row)
        return FileResult(path, "deleted", chunks=row.chunks)

    def reindex(self, progress: Progress = _noop) -> list[FileResult]:
        """Rebuild the collection from scratch from every known file (after a model or chunking change)."""
        rows = [r for r in self.manifest.all() if r.status != "deleted"]
        self.backend.drop_collection(self.settings.collection)
        self._store = None
        for r in rows:
            self.manifest.update(r.path, doc_id=None, chunks=0, status="queued")
        present = [Path(r.path) for r in rows if Path(r.path).exists()]
        gone = [r.path for r in rows if not Path(r.path).exists()]
        return self.apply(present, gone, progress)

    # ------------------------------------------------------------------ reporting
    def status(self) -> dict[str, Any]:
        """Counts for `brain status` and the Library page."""
        counts = self.manifest.counts()
        return {
            "documents": counts["done"],
            "failed": counts["failed"],
            "pending": counts["queued"] + counts["ingesting"],
            "chunks": self.manifest.total_chunks(),
            "points": self.store.count(),
            "backend": self.backend.kind,
            "embedding_model": self.embedder.model_id,
        }
