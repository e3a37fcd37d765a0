"""Where conversations persist: the LangGraph checkpointer (one thread per conversation) and a small
`conversations` table (title, timestamps, turn count) in the same database.

SQLite by default (`<data_dir>/conversations.sqlite3`, WAL); Postgres when `DATABASE_URL` is a postgres URL
and `langgraph-checkpoint-postgres` is installed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

# State values that are our own dataclasses; everything else in the state is a built-in or a message type.
# Listing them keeps checkpoint loading strict (LangGraph warns about, and will block, unlisted types).
ALLOWED_STATE_TYPES: list[tuple[str, ...]] = [("core.types", "Hit"), ("core.types", "Citation")]

_CREATE = """
CREATE TABLE IF NOT EXISTS conversations (
    thread_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0
)
"""


class CheckpointConfigError(RuntimeError):
    """`DATABASE_URL` asks for a database this installation cannot use."""


def serializer() -> JsonPlusSerializer:
    """The checkpoint serializer, restricted to the state's known types."""
    return JsonPlusSerializer(allowed_msgpack_modules=ALLOWED_STATE_TYPES)


def is_postgres_url(url: str | None) -> bool:
    """Whether `url` names a Postgres database."""
    return bool(url) and url.split(":", 1)[0] in ("postgres", "postgresql", "postgresql+psycopg")  # type: ignore[union-attr]


def connect_sqlite(path: Path | str) -> sqlite3.Connection:
    """A connection LangGraph's `SqliteSaver` can share across threads: autocommit, WAL, a busy timeout."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: SqliteSaver manages its own transactions; Python's implicit BEGIN would hold a
    # write lock between its statements. check_same_thread=False: the saver serialises access with a lock.
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@dataclass
class Conversations:
    """Titles and counters for conversation threads, next to the checkpoints (DB-API connection)."""

    conn: Any
    paramstyle: str = "?"  # "?" for sqlite3, "%s" for psycopg

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._exec(_CREATE)

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", self.paramstyle)
        with self._lock:
            cur = self.conn.cursor()
            try:
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
            finally:
                cur.close()
            if getattr(self.conn, "autocommit", True) is False:
                self.conn.commit()
            return rows

    def touch(self, thread_id: str, *, user_id: str = "", title: str = "", add_turn: bool = False) -> None:
        """Record activity on a thread; the first question becomes the title unless one is set."""
        now = time.time()
        self._exec(
            "INSERT INTO conversations (thread_id, user_id, title, created_at, updated_at, turns) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thread_id) DO UPDATE SET updated_at = excluded.updated_at, "
            "turns = conversations.turns + excluded.turns, "
            "title = CASE WHEN conversations.title = '' THEN excluded.title ELSE conversations.title END",
            (thread_id, user_id, _title(title), now, now, 1 if add_turn else 0),
        )

    def rename(self, thread_id: str, title: str) -> None:
        """Set a thread's title (creating its row if needed)."""
        self.touch(thread_id)
        self._exec("UPDATE conversations SET title = ? WHERE thread_id = ?", (_title(title, 200), thread_id))

    def delete(self, thread_id: str) -> None:
        """Forget a thread's row."""
        self._exec("DELETE FROM conversations WHERE thread_id = ?", (thread_id,))

    def list(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Threads, most recently used first."""
        sql = "SELECT thread_id, user_id, title, created_at, updated_at, turns FROM conversations"
        params: tuple[Any, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id = ?"
            params = (user_id,)
        rows = self._exec(sql + " ORDER BY updated_at DESC", params)
        keys = ("thread_id", "user_id", "title", "created_at", "updated_at", "turns")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def get(self, thread_id: str) -> dict[str, Any] | None:
        """One thread's row."""
        return next((c for c in self.list() if c["thread_id"] == thread_id), None)


def _title(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass
class Persistence:
    """The checkpointer and the conversation table, and how to close them."""

    checkpointer: BaseCheckpointSaver
    conversations: Conversations
    location: str
    _closers: tuple[Any, ...] = ()

    def close(self) -> None:
        """Close the database connections."""
        for c in self._closers:
            # Closing twice, or a connection the server already dropped, is not an error here.
            with contextlib.suppress(Exception):
                c.close()


def open_persistence(settings: Any, path: Path | str | None = None) -> Persistence:
    """Open the checkpointer the settings ask for: SQLite at `path` (default `<data_dir>/conversations.sqlite3`),
    or Postgres when `DATABASE_URL` is a postgres URL."""
    url = getattr(settings, "database_url", None)
    if path is None and is_postgres_url(url):
        return _open_postgres(url)  # type: ignore[arg-type]
    if path is None and url and not url.startswith("sqlite"):
        raise CheckpointConfigError(f"DATABASE_URL={url.split('@')[-1]!r} is neither a postgres nor a sqlite URL")
    if path is None and url and url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else url.split(":", 1)[-1]
    db = Path(path) if path is not None else Path(settings.data_dir) / "conversations.sqlite3"
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = connect_sqlite(db)
    saver = SqliteSaver(conn, serde=serializer())
    saver.setup()
    # Its own connection: the saver guards its connection with a lock of its own that we cannot share.
    meta = connect_sqlite(db)
    return Persistence(saver, Conversations(meta), str(db), (conn, meta))


def _open_postgres(url: str) -> Persistence:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg import Connection
        from psycopg.rows import dict_row
    except ImportError as exc:
        raise CheckpointConfigError(
            "DATABASE_URL points at Postgres, but langgraph-checkpoint-postgres is not installed: "
            "pip install 'langgraph-checkpoint-postgres' 'psycopg[binary]' (or unset DATABASE_URL to use SQLite)"
        ) from exc
    conn = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    saver = PostgresSaver(conn, serde=serializer())  # type: ignore[arg-type]
    saver.setup()
    meta = Connection.connect(url, autocommit=True)
    return Persistence(saver, Conversations(meta, paramstyle="%s"), url.split("@")[-1], (conn, meta))
