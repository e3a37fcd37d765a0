"""Bad input and crashes: every bad file fails with a reason, every good one lands, nothing is duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings
from ingest.pipeline import Ingestor
from store.factory import Backend
from store.ids import point_id
from tests import fixtures_docs as fx

ROOT = Path(__file__).resolve().parent.parent


def test_bad_files_fail_with_reasons_and_good_files_land(settings: Settings, embedder) -> None:
    inbox = settings.inbox
    fx.make_pdf(inbox / "good report.pdf", ["Quarterly revenue grew by 12 percent.", "Costs fell in March."])
    fx.make_docx(inbox / "Notizen über Ökologie 2024.docx")
    (inbox / "plain.txt").write_text("A perfectly ordinary note about compost heaps.", encoding="utf-8")
    (inbox / "latin1.txt").write_bytes("Café crème brûlée, naïve façade — déjà vu.".encode("cp1252"))
    fx.make_truncated_pdf(inbox / "truncated.pdf", ["This PDF was cut off half way. " * 40])
    fx.make_encrypted_pdf(inbox / "locked.pdf", ["secret numbers"])
    fx.make_blank_pdf(inbox / "scan.pdf")
    (inbox / "empty.md").write_bytes(b"")
    (inbox / "binary.txt").write_bytes(bytes(range(256)) * 64)
    fx.make_forged_size_docx(inbox / "bomb.docx", claimed_bytes=5 * 1024**3)
    (inbox / "big.txt").write_text("x " * 2_000_000, encoding="utf-8")  # 4 MB, over the test's limit below
    (inbox / "data.xyz").write_bytes(b"\x89\x00\x01 nothing anyone can read")

    settings.max_file_mb = 2
    backend = Backend(root=settings.qdrant_path)
    try:
        results = {Path(r.path).name: r for r in Ingestor(settings, backend, embedder=embedder).sync([inbox])}
    finally:
        backend.close()

    landed = {n for n, r in results.items() if r.outcome == "ingested"}
    assert landed == {"good report.pdf", "Notizen über Ökologie 2024.docx", "plain.txt", "latin1.txt"}
    reasons = {n: r.reason for n, r in results.items() if r.outcome == "failed"}
    expectations = {
        "truncated.pdf": "corrupt",
        "locked.pdf": "encrypted",
        "scan.pdf": "scanned",
        "empty.md": "empty",
        "binary.txt": "binary",
        "bomb.docx": "zip bomb",
        "big.txt": "MAX_FILE_MB",
        "data.xyz": "unsupported",
    }
    assert set(reasons) == set(expectations)
    for name, word in expectations.items():
        assert word.lower() in reasons[name].lower(), (name, reasons[name])
        assert "Traceback" not in reasons[name]


def _count(db: Path, status: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM files WHERE status = ?", (status,)).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_mid_ingestion_then_restart_completes_without_duplicates(tmp_path: Path) -> None:
    data, inbox = tmp_path / "data", tmp_path / "inbox"
    inbox.mkdir(parents=True)
    for i in range(24):
        body = "\n\n".join(f"Note {i}, paragraph {j}: the {j}th observation about topic {i} and its many causes."
                           for j in range(40))
        (inbox / f"note-{i:02d}.md").write_text(f"# Note {i}\n\n{body}", encoding="utf-8")
    env = {**os.environ, "DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "EMBED_BATCH_SIZE": "8"}
    cmd = [sys.executable, "-m", "brain", "ingest", str(inbox)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    db = data / "manifest.sqlite3"
    deadline = time.time() + 240
    while time.time() < deadline and _count(db, "done") < 3 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"ingestion ended before it could be killed: {proc.stderr.read().decode()[-800:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 3 <= _count(db, "done") < 24

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]

    settings = Settings(_env_file=None, data_dir=data)
    backend = Backend(root=settings.qdrant_path)
    try:
        ingestor = Ingestor(settings, backend)
        rows = [r for r in ingestor.manifest.all() if r.status != "deleted"]
        assert len(rows) == 24 and all(r.status == "done" for r in rows)
        expected = {point_id(r.doc_id, i) for r in rows for i in range(r.chunks)}
        stored = [r.id for r in ingestor.store.scroll()]
        assert len(stored) == len(set(stored)), "duplicate points"
        assert set(stored) == expected, "missing or stray chunks"
    finally:
        backend.close()
