"""The app's long-lived parts, shared by every browser session of one Streamlit process.

In embedded mode the app process owns the Qdrant Edge store (a file lock admits one process), so the store,
the ingestor, the folder watcher (a background thread) and the answer engine are built once, in
`st.cache_resource`, and every page reaches them through `get_runtime()`. Every write to the library (watcher
syncs, deletes, re-index) holds one lock. In server mode (`QDRANT_URL` set) a separate worker watches the drop
folder, so no watcher runs here.

The watcher pushes nothing into Streamlit: it records its progress in `Runtime.activity`, and the Library page
polls that (and the manifest) from an `st.fragment(run_every=...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
from langchain_core.language_models import BaseChatModel

from core.encoders import get_bm25
from core.settings import Settings, load_settings
from core.types import Document
from graphs.engine import AnswerEngine
from ingest.loaders import load_document
from ingest.pipeline import FileResult, Ingestor
from ingest.worker import FolderWatcher
from retrieval.search import Retriever
from store.factory import Backend, open_backend
from store.ids import point_id
from store.manifest import FileRow

log = logging.getLogger(__name__)

# Tests inject a fake chat model here (AppTest runs the app inside the test's process); None = the configured
# LLM (the packaged llama.cpp server or LLM_BASE_URL), started in the background when the app opens.
CHAT_MODEL_FACTORY: Callable[[Settings], BaseChatModel] | None = None

# Settings the Settings page may change while the app runs: they only shape the answer engine, which is rebuilt.
LIVE_FIELDS = ("llm_base_url", "llm_model", "llm_api_key", "llm_variant", "retrieval_k", "rerank", "reranker_model",
               "multi_query")

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:@+\-]*$")


# ---------------------------------------------------------------------------------------------- ingestion activity
@dataclass
class Activity:
    """Ingestion progress: written by the watcher or a library job (threads), read by the Library page."""

    running: bool = False
    label: str = ""
    done: int = 0
    total: int = 0
    current: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    last_results: list[FileResult] = field(default_factory=list)
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, label: str) -> None:
        """A sync or job starts (nothing may need doing: `total` stays 0 until the ingestor reports)."""
        with self._lock:
            self.running, self.label, self.done, self.total, self.current = True, label, 0, 0, ""
            self.started_at, self.error = time.time(), None

    def progress(self, done: int, total: int, result: FileResult | None, current: str) -> None:
        """The ingestor's progress callback."""
        with self._lock:
            self.done, self.total, self.current = done, total, current

    def end(self, results: Iterable[FileResult], error: str | None = None) -> None:
        """The sync or job finished; keeps what it changed for the page to summarise."""
        changed = [r for r in results if r.outcome != "unchanged"]
        with self._lock:
            self.running, self.current, self.finished_at, self.error = False, "", time.time(), error
            if changed:
                self.last_results = changed

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy for rendering."""
        with self._lock:
            return {"running": self.running, "label": self.label, "done": self.done, "total": self.total,
                    "current": self.current, "started_at": self.started_at, "finished_at": self.finished_at,
                    "last_results": list(self.last_results), "error": self.error}


class _AppWatcher(FolderWatcher):
    """The folder watcher, holding the runtime's write lock and reporting into its `Activity`."""

    def __init__(self, runtime: Runtime, folder: Path, debounce_ms: int) -> None:
        super().__init__(runtime.ingestor, folder, debounce_ms, progress=runtime.activity.progress)
        self._runtime = runtime

    def sync_once(self) -> list[FileResult]:
        """One sync, serialised with the app's own writes."""
        results: list[FileResult] = []
        with self._runtime.write_lock:
            self._runtime.activity.begin("syncing the drop folder")
            try:
                results = super().sync_once()
            finally:
                self._runtime.activity.end(results, self.last_error)
        return results


# ---------------------------------------------------------------------------------------------------- the runtime
class Runtime:
    """Settings, store backend, ingestor, folder watcher and answer engine for one app process."""

    def __init__(self, settings: Settings, *, start_watcher: bool = True, warm_up: bool = True) -> None:
        """Open the store (raises `store.base.StoreLocked` when another process holds the embedded one)."""
        self.settings = settings
        self.backend: Backend = open_backend(settings)
        self.write_lock = threading.RLock()
        self.activity = Activity()
        self.llm_status = "not started"
        self.reranker_status = ""
        self.watcher: FolderWatcher | None = None
        self._retired: list[AnswerEngine] = []
        self._memory: Any | None = None
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="library-job")
        self._closed = False
        try:
            settings.inbox.mkdir(parents=True, exist_ok=True)
            self.ingestor = Ingestor(settings, self.backend)
            self.engine = self._make_engine(settings)
            if start_watcher and self.embedded:
                self.watcher = _AppWatcher(self, settings.inbox, settings.watch_debounce_ms).start()
        except BaseException:
            self.backend.close()
            raise
        if warm_up:
            self.warm_up()

    # ------------------------------------------------------------------ facts
    @property
    def embedded(self) -> bool:
        """Whether this process owns an embedded Qdrant Edge store (else a Qdrant server and a separate worker)."""
        return self.backend.kind == "embedded"

    @property
    def inbox(self) -> Path:
        """The drop folder."""
        return self.settings.inbox

    @property
    def user_id(self) -> str:
        """Whose conversations and memories the app shows."""
        return self.settings.user_id

    # ------------------------------------------------------------------ answering
    def _make_engine(self, settings: Settings, reranker: Any = None) -> AnswerEngine:
        store = self.ingestor.store
        retriever = Retriever(settings, store, self.ingestor.embedder, get_bm25(), reranker=reranker)
        chat_model = CHAT_MODEL_FACTORY(settings) if CHAT_MODEL_FACTORY is not None else None
        memory_store = None
        if not hasattr(AnswerEngine, "memory"):
            # An engine that does not own its memory service: the app opens it over the same backend and hands
            # its LangGraph store to the graph, so what the Memory page edits is what answers recall.
            self._memory = self._memory or _open_memory(settings, self.backend, self.ingestor.embedder)
            memory_store = self._memory.store if self._memory is not None else None
        return AnswerEngine(settings, self.backend, chat_model=chat_model, retriever=retriever, store=memory_store)

    def warm_up(self) -> threading.Thread:
        """Start the LLM and load the reranker in the background, so the first question does not wait for them."""
        engine = self.engine
        self.llm_status = "starting"

        def run() -> None:
            try:
                engine.chat_model()
                status = "ready"
            except Exception as exc:  # shown as a notice on the Chat and Settings pages
                log.warning("the LLM is unavailable: %s", exc)
                status = f"unavailable: {short_error(exc)}"
            if engine is self.engine:
                self.llm_status = status
            try:
                rerank = engine.retriever.reranker.status if engine.settings.rerank else "off"
            except Exception as exc:
                rerank = f"unavailable: {short_error(exc)}"
            if engine is self.engine:
                self.reranker_status = rerank

        thread = threading.Thread(target=run, name="warm-up", daemon=True)
        thread.start()
        return thread

    def apply_settings(self, new: Settings) -> list[str]:
        """Use `new` from now on, without a restart, where possible; returns the changed fields that need one."""
        changed = [f for f in type(new).model_fields if getattr(new, f) != getattr(self.settings, f)]
        need_restart = [f for f in changed if f not in LIVE_FIELDS]
        live = new.model_copy(update={f: getattr(self.settings, f) for f in need_restart})
        if not [f for f in changed if f in LIVE_FIELDS]:
            return need_restart
        old = self.engine
        # The cross-encoder is slow to load; keep it when its model did not change.
        reranker = old.retriever.reranker if live.reranker_model == old.settings.reranker_model else None
        self.settings = live
        self.engine = self._make_engine(live, reranker)
        # A session may still be streaming from the old engine: it is closed with the runtime, not now.
        self._retired.append(old)
        self.warm_up()
        return need_restart

    def memory(self) -> Any | None:
        """The long-term memory service (`graphs.memory.service.MemoryService`), or None where it is missing."""
        if not hasattr(AnswerEngine, "memory"):
            return self._memory
        try:
            return self.engine.memory  # type: ignore[attr-defined]
        except Exception:  # a broken memory store must not take the rest of the app down
            log.exception("the memory service could not be opened")
            return None

    # ------------------------------------------------------------------ library
    def documents(self) -> list[FileRow]:
        """Every file the library knows (deleted ones excluded), by path."""
        return self.ingestor.manifest.all()

    def save_upload(self, name: str, data: bytes) -> tuple[Path, bool]:
        """Write an uploaded file into the drop folder under a sanitised name; `(path, changed)`.

        The watcher ingests it from there (in server mode, the worker does). A file with the same name is replaced
        (a new version of the document); identical content is left alone.
        """
        from app.components import safe_upload_name

        inbox = self.inbox.resolve()
        inbox.mkdir(parents=True, exist_ok=True)
        target = (inbox / safe_upload_name(name)).resolve()
        if target.parent != inbox:  # belt and braces: the sanitiser already removed every directory part
            raise ValueError(f"refusing to write outside the drop folder: {name!r}")
        if target.exists() and target.read_bytes() == data:
            return target, False
        # Written under a hidden temporary name and renamed, so the watcher never reads half a file.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target, True

    def delete_document(self, path: str) -> FileResult:
        """Remove a document from the library; a file in the drop folder is deleted too (or it would come back)."""
        with self.write_lock:
            p = Path(path)
            if self.inbox.resolve() in p.resolve().parents:
                p.unlink(missing_ok=True)
            return self.ingestor.remove(path)

    def reindex_document(self, path: str) -> Future[list[FileResult]]:
        """Load, chunk and embed one document again, in the background (progress in `activity`)."""

        def job() -> list[FileResult]:
            with self.write_lock:
                self.activity.begin(f"re-indexing {Path(path).name}")
                results: list[FileResult] = []
                error = None
                try:
                    self.ingestor.remove(path)
                    # Forget the indexed version, or the pipeline would find it unchanged and skip it.
                    # ...and show it as queued, not deleted, so it stays in the Library while it re-indexes.
                    self.ingestor.manifest.update(path, doc_id=None, chunks=0, status="queued")
                    if Path(path).exists():
                        results = self.ingestor.apply([Path(path)], [], self.activity.progress)
                    else:
                        error = f"{path} no longer exists"
                except Exception as exc:
                    log.exception("re-indexing %s failed", path)
                    error = short_error(exc)
                finally:
                    self.activity.end(results, error)
                return results

        return self._jobs.submit(job)

    def sync_now(self) -> Future[list[FileResult]] | None:
        """Reconcile the drop folder at once (the watcher does this on file events; this is the manual nudge)."""
        watcher = self.watcher
        if watcher is None:
            return None
        return self._jobs.submit(watcher.sync_once)

    def chunk(self, doc_id: str, chunk_index: int) -> dict[str, Any] | None:
        """The stored payload of one chunk (what a citation points at), or None when it is gone."""
        records = self.ingestor.store.retrieve([point_id(doc_id, chunk_index)])
        return dict(records[0].payload) if records else None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the watcher and jobs, close engines and the store (releases the embedded store's lock)."""
        if self._closed:
            return
        self._closed = True
        if self.watcher is not None:
            self.watcher.stop()
        self._jobs.shutdown(wait=True, cancel_futures=True)
        for engine in [*self._retired, self.engine]:
            with contextlib.suppress(Exception):
                engine.close()
        with self.write_lock:
            self.backend.close()


def _open_memory(settings: Settings, backend: Backend, embedder: Any) -> Any | None:
    """`graphs.memory.service.MemoryService` over the app's backend, or None where it is not installed."""
    try:
        from graphs.memory.service import MemoryService
    except ImportError:
        return None
    try:
        return MemoryService(settings, backend, embedder=embedder)
    except Exception:
        log.exception("the memory service could not be opened")
        return None


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line for the user: the exception's message (its type when it has none), never a traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------- the process-wide runtime
_OPEN: list[Runtime] = []


@st.cache_resource(show_spinner="Opening your library…")
def _open_runtime(data_dir: str, qdrant_url: str) -> Runtime:
    # The arguments only key the cache (tests run several data directories in one process).
    runtime = Runtime(load_settings())
    _OPEN.append(runtime)
    return runtime


def get_runtime() -> Runtime:
    """The runtime for the configured data directory, opened on first use (raises `StoreLocked`, `StoreError`)."""
    settings = load_settings()
    return _open_runtime(str(settings.data_dir), settings.qdrant_url or "")


def shutdown() -> None:
    """Close every runtime this process opened and forget them (tests; interpreter exit)."""
    while _OPEN:
        with contextlib.suppress(Exception):
            _OPEN.pop().close()
    with contextlib.suppress(Exception):
        _open_runtime.clear()


atexit.register(shutdown)


# ---------------------------------------------------------------------------------------------- saved settings
def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _SAFE_VALUE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_settings_file(path: Path, changes: dict[str, Any]) -> None:
    """Write `KEY=value` lines for the changed fields into the settings file, keeping every other line."""
    if not changes:
        return
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = {k.upper(): _env_value(v) for k, v in changes.items()}
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if "=" in line and not line.lstrip().startswith("#") and key.upper() in pending:
            out.append(f"{key.upper()}={pending.pop(key.upper())}")
        else:
            out.append(line)
    out.extend(f"{k}={v}" for k, v in pending.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def env_overrides(fields: Iterable[str]) -> list[str]:
    """Which of these settings are fixed by environment variables (they win over the settings file)."""
    return [f for f in fields if f.upper() in os.environ or f.lower() in os.environ]


# ---------------------------------------------------------------------------------------------- source documents
_DOC_CACHE: dict[tuple[str, int, int], Document] = {}
_DOC_CACHE_LOCK = threading.Lock()


def load_original(path: str, settings: Settings) -> Document | None:
    """The original file, loaded again (for the source view), or None when it is gone or unreadable.

    Cached by path, size and mtime: reopening citations of one document loads it once.
    """
    p = Path(path)
    try:
        st_ = p.stat()
    except OSError:
        return None
    key = (str(p), st_.st_size, st_.st_mtime_ns)
    with _DOC_CACHE_LOCK:
        if key in _DOC_CACHE:
            return _DOC_CACHE[key]
    try:
        doc = load_document(p, max_file_mb=settings.max_file_mb,
                            max_docx_uncompressed_mb=settings.max_docx_uncompressed_mb)
    except Exception:
        log.info("cannot reload %s for the source view", path, exc_info=True)
        return None
    with _DOC_CACHE_LOCK:
        if len(_DOC_CACHE) >= 8:
            _DOC_CACHE.pop(next(iter(_DOC_CACHE)))
        _DOC_CACHE[key] = doc
    return doc
