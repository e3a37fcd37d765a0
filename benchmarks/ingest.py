"""Ingestion throughput on real documents nobody here wrote: the R manuals (Debian `r-doc-pdf`) and the Python
docs (Debian `python3.11-doc`, `_sources/**/*.rst.txt`).

Each measurement runs in its own process so peak RSS belongs to that run alone:

- pipeline: `Ingestor.sync` into a fresh embedded Qdrant Edge (load → chunk → embed → upsert → manifest);
  pages/s, chunks/s, peak RSS, at two corpus sizes (RSS should be flat: documents stream one at a time);
- embedder: the same chunks' embedding texts through the embedder alone, in the same process after the sync —
  the ceiling; the ratio pipeline/embedder says how much everything but the model costs (goal ≥ 0.9);
- no-change re-sync of the whole corpus and of 1,000 small files (goal < 2 s for 1,000 files);
- baseline: the textbook pipeline (pypdf page text in memory, fixed 1,000-character splits with 200 overlap,
  encode everything, then a rank-bm25 index) on the same files.

    python -m benchmarks.ingest                # R manuals without the 2,415-page refman + Python tutorial/howto
    python -m benchmarks.ingest --full         # adds refman.pdf and every Python doc page (long: ~1 h)

Prints a table and writes benchmarks/results/ingest.json. Documents are fetched with apt-get, never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "bench-docs"
RESULTS = ROOT / "benchmarks" / "results"
R_SMALL = ("R-intro.pdf", "R-data.pdf", "R-admin.pdf")
R_MEDIUM = (*R_SMALL, "R-exts.pdf", "R-lang.pdf", "R-ints.pdf", "R-FAQ.pdf")
PY_DIRS = ("tutorial", "howto")


def _fetch(package: str) -> Path:
    """Extract a Debian package under the cache once; returns its root."""
    dest = CACHE / package
    if (dest / ".complete").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    (dest / ".complete").write_text("ok\n")
    return dest


def corpus(full: bool) -> dict[str, list[Path]]:
    """The benchmark's files: `small` ⊂ `large`, plus 1,000 small real-text files for the re-sync check."""
    r_root = _fetch("r-doc-pdf")
    pdfs = {p.name: p for p in r_root.rglob("*.pdf")}
    py_root = next(_fetch("python3.11-doc").rglob("_sources"))
    if full:
        large_pdfs = sorted(p for name, p in pdfs.items() if name != "fullrefman.pdf")
        py = sorted(py_root.rglob("*.rst.txt"))
    else:
        large_pdfs = [pdfs[n] for n in R_MEDIUM if n in pdfs]
        py = sorted(p for d in PY_DIRS for p in (py_root / d).glob("*.rst.txt"))
    small = [pdfs[n] for n in R_SMALL if n in pdfs] + py[: len(py) // 2]
    return {"small": small, "large": large_pdfs + py, "notes": _notes(py_root)}


def _notes(py_root: Path, n: int = 1000) -> list[Path]:
    """1,000 files of one real paragraph each, cut from the Python library docs."""
    out = CACHE / "notes1000"
    if len(list(out.glob("*.txt"))) == n:
        return sorted(out.glob("*.txt"))
    out.mkdir(parents=True, exist_ok=True)
    paras: list[str] = []
    for f in sorted((py_root / "library").glob("*.rst.txt")):
        paras += [p.strip() for p in f.read_text(encoding="utf-8", errors="replace").split("\n\n")
                  if len(p.split()) >= 25 and not p.lstrip().startswith((".. ", "::"))]
        if len(paras) >= n:
            break
    for i, text in enumerate(paras[:n]):
        (out / f"note{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
    return sorted(out.glob("*.txt"))


def _stage(files: list[Path], inbox: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = inbox / f"{f.parent.name}__{f.name}"
        if not target.exists():
            os.link(f, target) if f.stat().st_dev == inbox.stat().st_dev else shutil.copy2(f, target)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------ workers
def worker_pipeline(files: list[Path], workdir: Path, with_embedder: bool) -> dict[str, Any]:
    """Sync `files` into a fresh store; then the embedder alone on the same chunks; then a no-change re-sync."""
    from core.encoders import get_embedder
    from core.settings import Settings
    from ingest.pipeline import Ingestor
    from store.factory import open_backend

    settings = Settings(_env_file=None, data_dir=workdir / "data", torch_threads=1)
    _stage(files, settings.inbox)
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    embedder.embed(["warm up"])
    rss_before = _peak_rss_mb()
    backend = open_backend(settings)
    try:
        ingestor = Ingestor(settings, backend, embedder=embedder)
        started = time.perf_counter()
        results = ingestor.sync([settings.inbox])
        seconds = time.perf_counter() - started
        rss_ingest = _peak_rss_mb()
        done = [r for r in results if r.outcome == "ingested"]
        chunks = sum(r.chunks for r in done)
        pages = sum(r.pages or 1 for r in done)
        out: dict[str, Any] = {
            "files": len(files), "ingested": len(done), "failed": [(r.path, r.reason) for r in results
                                                                    if r.outcome == "failed"],
            "pages": pages, "chunks": chunks, "seconds": round(seconds, 2),
            "pages_per_s": round(pages / seconds, 2), "chunks_per_s": round(chunks / seconds, 2),
            "peak_rss_mb": round(rss_ingest, 1), "rss_before_ingest_mb": round(rss_before, 1),
        }
        started = time.perf_counter()
        again = ingestor.sync([settings.inbox])
        out["resync_s"] = round(time.perf_counter() - started, 3)
        out["resync_unchanged"] = sum(r.outcome == "unchanged" for r in again) if again else len(files)
        if with_embedder:
            from types import SimpleNamespace

            from ingest.chunking import embedding_text

            # exactly the texts the pipeline embedded, rebuilt from the stored payloads
            texts = [embedding_text(SimpleNamespace(**{k: rec.payload.get(k) or d for k, d in  # type: ignore[arg-type]
                                                       (("title", ""), ("heading_path", []), ("text", ""))}))
                     for rec in ingestor.store.scroll()]
            started = time.perf_counter()
            embedder.embed(texts)
            emb_s = time.perf_counter() - started
            out["embedder_chunks_per_s"] = round(len(texts) / emb_s, 2)
            out["pipeline_to_embedder"] = round(out["chunks_per_s"] / out["embedder_chunks_per_s"], 3)
        return out
    finally:
        backend.close()


def worker_baseline(files: list[Path]) -> dict[str, Any]:
    """The textbook pipeline: everything in memory, fixed-size splits, encode all, rank-bm25 over all."""
    from pypdf import PdfReader
    from rank_bm25 import BM25Okapi

    from core.encoders import get_embedder
    from core.settings import Settings

    settings = Settings(_env_file=None, torch_threads=1)
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    embedder.embed(["warm up"])
    started = time.perf_counter()
    pages: list[str] = []
    for f in files:
        if f.suffix == ".pdf":
            pages += [page.extract_text() or "" for page in PdfReader(f).pages]
        else:
            pages.append(f.read_text(encoding="utf-8", errors="replace"))
    chunks = [text[i : i + 1000] for text in pages for i in range(0, max(len(text), 1), 800) if text[i : i + 1000]]
    embedder.embed(chunks)
    BM25Okapi([c.lower().split() for c in chunks])
    seconds = time.perf_counter() - started
    return {"files": len(files), "pages": len(pages), "chunks": len(chunks), "seconds": round(seconds, 2),
            "pages_per_s": round(len(pages) / seconds, 2), "chunks_per_s": round(len(chunks) / seconds, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _spawn(kind: str, files: list[Path], extra: list[str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(map(str, files)))
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", "benchmarks.ingest", "--worker", kind, "--files", str(listing),
               "--workdir", tmp, "--out", str(out), *(extra or [])]
        subprocess.run(cmd, cwd=ROOT, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="Include refman.pdf and all Python docs.")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--with-embedder", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.worker:
        files = [Path(p) for p in args.files.read_text().splitlines() if p]
        result = (worker_baseline(files) if args.worker == "baseline"
                  else worker_pipeline(files, args.workdir, args.with_embedder))
        args.out.write_text(json.dumps(result))
        return 0

    sets = corpus(args.full)
    runs: dict[str, dict[str, Any]] = {}
    print(f"corpus: small {len(sets['small'])} files, large {len(sets['large'])} files", file=sys.stderr)
    runs["pipeline_small"] = _spawn("pipeline", sets["small"])
    runs["pipeline_large"] = _spawn("pipeline", sets["large"], ["--with-embedder"])
    runs["resync_1000_notes"] = _spawn("pipeline", sets["notes"])
    if not args.skip_baseline:
        runs["baseline_large"] = _spawn("baseline", sets["large"])

    from rich.console import Console
    from rich.table import Table

    table = Table(title="Ingestion (one process per row, 1 torch thread)")
    for col in ("run", "files", "pages", "chunks", "s", "pages/s", "chunks/s", "embedder chunks/s", "ratio",
                "peak RSS MB", "no-change re-sync s"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for name, r in runs.items():
        table.add_row(name, str(r["files"]), str(r["pages"]), str(r["chunks"]), f"{r['seconds']:.1f}",
                      f"{r['pages_per_s']:.1f}", f"{r['chunks_per_s']:.1f}", str(r.get("embedder_chunks_per_s", "")),
                      str(r.get("pipeline_to_embedder", "")), f"{r['peak_rss_mb']:.0f}", str(r.get("resync_s", "")))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"full": args.full, "runs": runs,
                                    "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
