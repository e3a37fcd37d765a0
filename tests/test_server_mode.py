"""Server mode: the ingestion worker and the app are separate processes that share one Qdrant server.

This is the split docker-compose.yml runs (`worker`: `brain watch` on the drop folder; `app`: the UI searching
the same collection). Here both are real subprocesses with nothing in common but QDRANT_URL: separate data
directories (so separate manifests), separate embedder instances. The test proves that

- both can hold the store at the same time (the embedded store would refuse the second with its lock),
- what the worker ingests from its folder, at start and later from file events, becomes searchable by the app
  without restarting either, and
- a file deleted from the folder disappears from the app's results.

It needs a real Qdrant server, so it runs only where QDRANT_URL points at one (e.g. `docker compose up -d qdrant`
then `QDRANT_URL=http://localhost:6333 pytest -m server`) and is skipped, with the reason, everywhere else.
qdrant-client's in-memory mode cannot stand in: its data lives inside one process. The qdrant-client code path
itself is covered against that in-memory mode by tests/test_store_contract.py.

The collections it creates have a unique name and are dropped afterwards, so a real library is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0  # a cold torch import plus the embedder load, on a busy 2-core machine
INGEST_TIMEOUT_S = 180.0  # watcher start, debounce, embedding, upsert

# The app side: what the Streamlit app does to answer, minus the UI and the LLM. It opens the configured
# backend and the chunks collection, then answers JSON requests on stdin: search until `marker` is (or is
# no longer) among the hits, or until `timeout` seconds have passed.
APP_PROCESS = r"""
import json, sys, time
from core.encoders import get_bm25, get_embedder
from core.settings import Settings
from retrieval.search import Retriever
from store.factory import open_backend

settings = Settings()
embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
with open_backend(settings) as backend:
    store = backend.collection(settings.collection, embedder.dim, {"embedding_model": embedder.model_id})
    retriever = Retriever(settings, store, embedder, get_bm25())
    print(json.dumps({"event": "ready", "backend": backend.kind}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        deadline = time.monotonic() + req["timeout"]
        while True:
            hits = retriever.search(req["query"], k=5, rerank=False).hits
            found = any(req["marker"] in h.text for h in hits)
            if found == req["expect"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(json.dumps({"event": "result", "found": found, "paths": sorted({h.path for h in hits})}), flush=True)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _auth_headers() -> dict[str, str]:
    key = os.environ.get("QDRANT_API_KEY")
    return {"api-key": key} if key else {}


def _unreachable(url: str) -> str | None:
    """Why the Qdrant server at `url` cannot be used, or None when it answers /readyz."""
    try:
        req = urllib.request.Request(url.rstrip("/") + "/readyz", headers=_auth_headers())
        with urllib.request.urlopen(req, timeout=3) as resp:
            return None if resp.status == 200 else f"GET /readyz answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"GET /readyz answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


@pytest.fixture(scope="module")
def qdrant_url() -> str:
    """The reachable Qdrant server from QDRANT_URL, or a skip that says why there is none."""
    url = os.environ.get("QDRANT_URL", "").strip()
    how = "start one with `docker compose up -d qdrant` and set QDRANT_URL=http://localhost:6333"
    if not url:
        pytest.skip(f"no Qdrant server reachable at QDRANT_URL (unset); {how}")
    if not url.startswith(("http://", "https://")):
        pytest.skip(f"no Qdrant server reachable at QDRANT_URL={url!r} (not an http(s) URL; an in-memory or "
                    f"local-path client cannot be shared between processes); {how}")
    reason = _unreachable(url)
    if reason:
        pytest.skip(f"no Qdrant server reachable at QDRANT_URL={url}: {reason}; {how}")
    return url


class Proc:
    """A child process with its stdout read line by line in a thread (so waits can time out)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path, log: Path,
                 stdin: bool = False) -> None:
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.lines: queue.Queue[str] = queue.Queue()
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
            # A shell that runs pytest in the background starts it with SIGINT ignored, and Python keeps an
            # ignored SIGINT ignored; reset it so the children stop on SIGINT as they do under Docker.
            preexec_fn=_default_sigint,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
            self._log.write(line.encode())
            self._log.flush()

    def next_event(self, timeout: float) -> dict[str, Any]:
        """The next JSON line on stdout (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no answer within {timeout:.0f} s\n{self.tail()}")
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    raise AssertionError(f"{self.name} exited with {self.popen.returncode}\n{self.tail()}") from None
                continue
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)

    def wait_for_text(self, text: str, timeout: float) -> None:
        """Wait until a stdout line contains `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=1.0):
                    return
            except queue.Empty:
                if not self.alive:
                    break
        raise AssertionError(f"{self.name}: never printed {text!r}\n{self.tail()}")

    def send(self, obj: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(obj) + "\n")
        self.popen.stdin.flush()

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return f"--- {self.name} log ({self.log_path}) ---\n{text[-n:]}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """End of input first (the app's loop ends), else SIGINT as Docker sends it (see docker-compose.yml),
        else kill."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        if self.alive:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()


def _write_doc(path: Path, marker: str, topic: str) -> None:
    # Write under a temporary name and rename, as a file manager's copy does, so the watcher never reads
    # a half-written file (temporary names are ignored by the scanner).
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(
        f"# {topic}\n\n"
        f"The {topic} note records the reference code {marker}. It explains how the {topic} works, "
        f"which parts it has, and what to check before relying on it.\n",
        encoding="utf-8",
    )
    tmp.rename(path)


@pytest.fixture
def server_env(qdrant_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment shared by both processes: the server, throwaway collections, offline models."""
    suffix = uuid.uuid4().hex[:12]
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "INBOX_DIR", "DATABASE_URL")}
    env.update({
        "QDRANT_URL": qdrant_url,
        "COLLECTION": f"test_server_mode_{suffix}",
        "MEMORY_COLLECTION": f"test_server_mode_mem_{suffix}",
        "RERANK": "false",
        "WATCH_DEBOUNCE_MS": "300",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        # The children run in tmp_path (so no developer .env is read) and import the project from here.
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    })
    yield env
    from qdrant_client import QdrantClient

    client = QdrantClient(url=qdrant_url, api_key=os.environ.get("QDRANT_API_KEY") or None)
    try:
        for name in (env["COLLECTION"], env["MEMORY_COLLECTION"]):
            if client.collection_exists(name):
                client.delete_collection(name)
    finally:
        client.close()


def test_worker_and_app_processes_share_one_qdrant_server(server_env: dict[str, str], tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first, second = f"ALPHA-{uuid.uuid4().hex[:8]}", f"BRAVO-{uuid.uuid4().hex[:8]}"
    _write_doc(inbox / "lighthouse.md", first, "lighthouse lamp")  # there before the worker starts

    # The app: its own data dir, nothing shared with the worker but the Qdrant server.
    app = Proc("app", [sys.executable, "-c", APP_PROCESS], {**server_env, "DATA_DIR": str(tmp_path / "app-data")},
               tmp_path, tmp_path / "app.log", stdin=True)
    worker: Proc | None = None
    try:
        ready = app.next_event(START_TIMEOUT_S)
        assert ready == {"event": "ready", "backend": "server"}, ready

        # The worker: `brain watch`, exactly as the compose `worker` service runs it, while the app is up.
        worker = Proc("worker", [sys.executable, "-m", "brain", "watch", str(inbox)],
                      {**server_env, "DATA_DIR": str(tmp_path / "worker-data")}, tmp_path, tmp_path / "worker.log")

        def ask(marker: str, topic: str, expect: bool) -> dict[str, Any]:
            app.send({"query": f"{topic} reference code", "marker": marker, "expect": expect,
                      "timeout": INGEST_TIMEOUT_S})
            result = app.next_event(INGEST_TIMEOUT_S + 60)
            assert worker is not None
            assert result["found"] is expect, (
                f"expected {marker} {'in' if expect else 'gone from'} the app's results, got {result}\n"
                f"{worker.tail()}\n{app.tail()}"
            )
            return result

        # 1. The startup sync: a file dropped while no worker ran is ingested and the app finds it.
        result = ask(first, "lighthouse lamp", expect=True)
        assert str((inbox / "lighthouse.md").resolve()) in result["paths"]

        # 2. A file event while both run: the worker ingests it, the running app sees it without a restart.
        # The worker starts watching only after its startup sync has finished and printed its summary; a file
        # dropped before the watcher is armed raises no event (and waits for the next one), so let it arm.
        worker.wait_for_text("ingested", START_TIMEOUT_S)
        time.sleep(2.0)
        _write_doc(inbox / "greenhouse.md", second, "greenhouse vent")
        ask(second, "greenhouse vent", expect=True)

        # 3. A deletion from the folder removes the document's points; the app stops finding it.
        (inbox / "lighthouse.md").unlink()
        ask(first, "lighthouse lamp", expect=False)
        ask(second, "greenhouse vent", expect=True)

        # Both held the shared store the whole time (an embedded store would have refused the second).
        assert app.alive, app.tail()
        assert worker.alive, worker.tail()
    finally:
        if worker is not None:
            worker.stop()
        app.stop()
    # Stopped by SIGINT as Docker does: `brain watch` exits cleanly (prints "stopped"), not by a traceback.
    assert worker is not None
    assert worker.popen.returncode == 0, worker.tail()
