"""The drop-folder worker: watch a folder and keep the index in sync with it.

File events only *trigger* a sync; the sync itself re-scans the folder with the cheap size+mtime
check, so bursts, renames, editors' save-by-replace and whole-folder deletions all converge to the
same state, and a restart picks up whatever happened while the worker was down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import watch

from ingest.pipeline import FileResult, Ingestor, Progress
from ingest.scan import is_ignored

log = logging.getLogger(__name__)


class FolderWatcher:
    """Keeps `folder` and the index in sync until stopped."""

    def __init__(self, ingestor: Ingestor, folder: Path, debounce_ms: int = 1500,
                 progress: Progress | None = None, on_batch: Callable[[list[FileResult]], None] | None = None,
                 rescan_s: float = 30.0) -> None:
        self.ingestor = ingestor
        self.folder = folder.expanduser().resolve()
        self.debounce_ms = debounce_ms
        self.progress = progress
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy = threading.Event()
        self.synced = threading.Event()  # set once the first full sync has finished
        self.rescan_s = rescan_s
        self.last_error: str | None = None

    def sync_once(self) -> list[FileResult]:
        """Finish interrupted work, then reconcile the folder."""
        self.busy.set()
        try:
            results = self.ingestor.resume(self.progress) if self.progress else self.ingestor.resume()
            results += self.ingestor.sync([self.folder], self.progress) if self.progress else \
                self.ingestor.sync([self.folder])
            self.last_error = None
        except Exception as exc:  # keep watching: one bad sync must not kill the worker
            log.exception("sync of %s failed", self.folder)
            self.last_error = f"{type(exc).__name__}: {exc}"
            results = []
        finally:
            self.busy.clear()
        if self.on_batch and results:
            self.on_batch(results)
        return results

    def run(self) -> None:
        """Block: one sync per debounced burst of file events, plus a cheap stat-only rescan now and then.

        The watcher is armed before the initial sync, so a file dropped while that sync runs still
        triggers another one; the periodic rescan covers folders whose events never arrive (network mounts).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        synced_at: float | None = None
        for changes in watch(self.folder, debounce=self.debounce_ms, stop_event=self.stop_event,
                             watch_filter=lambda _change, path: not is_ignored(Path(path)),
                             rust_timeout=500, yield_on_timeout=True):
            if self.stop_event.is_set():
                break
            due = synced_at is None or time.monotonic() - synced_at >= self.rescan_s
            if changes or due:
                if changes:
                    log.info("%d file events under %s", len(changes), self.folder)
                self.sync_once()
                synced_at = time.monotonic()
                self.synced.set()

    def start(self) -> FolderWatcher:
        """Run in a daemon thread (the app's embedded mode)."""
        if self._thread is None or not self._thread.is_alive():
            self.stop_event.clear()
            self._thread = threading.Thread(target=self.run, name="folder-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the watcher to stop and wait for it."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()
