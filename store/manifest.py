"""The ingestion manifest and job queue: one SQLite row per file path (WAL, idempotent writes).

`doc_id` is the content hash of the version currently live in the index; `sha256` is the hash of
the file as last seen. They differ while an edited file is being re-ingested, so a crash mid-way
leaves the old version searchable and the row still marked for work.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

STATUSES = ("queued", "ingesting", "done", "failed", "deleted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path         TEXT PRIMARY KEY,
    size         INTEGER NOT NULL DEFAULT 0,
    mtime_ns     INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT,
    doc_id       TEXT,
    doc_version  INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'queued',
    error        TEXT,
    warnings     TEXT,
    chunks       INTEGER NOT NULL DEFAULT 0,
    pages        INTEGER,
    title        TEXT,
    file_type    TEXT,
    queued_at    REAL,
    started_at   REAL,
    finished_at  REAL,
    seconds      REAL
);
CREATE INDEX IF NOT EXISTS files_doc ON files(doc_id);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
"""


@dataclass
class FileRow:
    """One file as the manifest knows it."""

    path: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str | None = None
    doc_id: str | None = None
    doc_version: int = 0
    status: str = "queued"
    error: str | None = None
    warnings: str | None = None
    chunks: int = 0
    pages: int | None = None
    title: str | None = None
    file_type: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None


_COLUMNS = [f.name for f in fields(FileRow)]


class Manifest:
    """Thread-safe access to the manifest database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: Iterable[object] = ()) -> list[FileRow]:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM files {sql}", tuple(args))
            return [FileRow(*r) for r in cur.fetchall()]

    def get(self, path: str) -> FileRow | None:
        """The row for a path, if any."""
        rows = self._rows("WHERE path = ?", (path,))
        return rows[0] if rows else None

    def all(self, include_deleted: bool = False) -> list[FileRow]:
        """Every row, newest activity first."""
        where = "" if include_deleted else "WHERE status != 'deleted'"
        return self._rows(f"{where} ORDER BY path")

    def under(self, folder: str) -> list[FileRow]:
        """Live rows whose path lies under a folder."""
        prefix = folder.rstrip("/") + "/"
        return self._rows("WHERE status != 'deleted' AND substr(path, 1, ?) = ?", (len(prefix), prefix))

    def by_status(self, *statuses: str) -> list[FileRow]:
        """Rows in any of the given states."""
        marks = ",".join("?" * len(statuses))
        return self._rows(f"WHERE status IN ({marks}) ORDER BY queued_at, path", statuses)

    def with_doc(self, doc_id: str) -> list[FileRow]:
        """Live paths whose indexed content is this document."""
        return self._rows("WHERE doc_id = ? AND status = 'done'", (doc_id,))

    def put(self, row: FileRow) -> None:
        """Insert or replace a row."""
        marks = ",".join("?" * len(_COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO files ({', '.join(_COLUMNS)}) VALUES ({marks})",
                tuple(getattr(row, c) for c in _COLUMNS),
            )

    def update(self, path: str, **values: object) -> None:
        """Set some columns of one row."""
        if not values:
            return
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE files SET {sets} WHERE path = ?", (*values.values(), path))

    def rename(self, old: str, new: str) -> None:
        """Move a row to a new path (a file renamed or moved on disk)."""
        with self._lock:
            self._db.execute("DELETE FROM files WHERE path = ?", (new,))
            self._db.execute("UPDATE files SET path = ? WHERE path = ?", (new, old))

    def remove(self, path: str) -> None:
        """Forget a path entirely."""
        with self._lock:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))

    def enqueue(self, path: str, size: int, mtime_ns: int) -> None:
        """Mark a path as waiting for ingestion (keeps what is known about its live version)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO files (path, size, mtime_ns, status, queued_at) VALUES (?, ?, ?, 'queued', ?) "
                "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "status = 'queued', queued_at = excluded.queued_at, error = NULL",
                (path, size, mtime_ns, now),
            )

    def counts(self) -> dict[str, int]:
        """Number of files per status."""
        with self._lock:
            cur = self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status")
            out = dict.fromkeys(STATUSES, 0)
            out.update({s: n for s, n in cur.fetchall()})
            return out

    def total_chunks(self) -> int:
        """Chunks of all live documents, each distinct document counted once."""
        with self._lock:
            cur = self._db.execute(
                "SELECT COALESCE(SUM(chunks), 0) FROM (SELECT doc_id, MAX(chunks) AS chunks FROM files "
                "WHERE status = 'done' GROUP BY doc_id)"
            )
            return int(cur.fetchone()[0])
