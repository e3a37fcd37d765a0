"""Query latency per stage (encode, fuse, rerank) at 10k and 100k chunks, beside the rank-bm25 baseline.

    python benchmarks/retrieval.py [--sizes 10000 100000] [--queries 100] [--base 2000] [--optimize]

The corpus is synthesised from real chunks: the pyfaq sections are chunked exactly as ingestion chunks
them, `--base` of those chunks are embedded for real, and every further chunk is a copy of one of them
with ~15 % of its words swapped for random corpus words and its vector nudged by Gaussian noise
(cosine ≈ 0.93 to its source). Embedding 100k chunks would take well over an hour on two cores; the
query path only needs realistic text statistics for BM25 and realistic vector geometry for dense.

Measured per query, through the product's own `Retriever.search`:
  encode  dense query embedding + BM25 query terms
  fuse    the Qdrant request: dense and BM25 prefetch, fused (RRF/DBSF) inside Qdrant Edge
  rerank  a cross-encoder over the top `rerank_candidates` (a stand-in model with an untrained head when no
          reranker is configured: same architecture as ms-marco-MiniLM-L-6-v2, so the same cost)
and, side by side on the same chunks and vectors, LangChain's textbook hybrid: rank-bm25 (`text.split()`)
+ exact dense search, fused by weighted RRF (0.5/0.5, c=60).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from core.encoders import Embedder, get_bm25, get_embedder  # noqa: E402
from core.models import resolve_embedding_model  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402
from core.types import Document, Section  # noqa: E402
from ingest.chunking import Chunker, embedding_text  # noqa: E402
from ingest.pipeline import TRAIL_RESERVE  # noqa: E402
from retrieval.eval.baseline import (  # noqa: E402
    ENSEMBLE_C,
    ENSEMBLE_WEIGHTS,
    DenseIndex,
    RankBm25Index,
    weighted_rrf,
)
from retrieval.eval.beir import load_beir  # noqa: E402
from retrieval.filters import SearchFilters  # noqa: E402
from retrieval.rerank import Reranker  # noqa: E402
from retrieval.search import Retriever  # noqa: E402
from store.base import PointData, folders_of  # noqa: E402
from store.factory import Backend  # noqa: E402
from store.ids import point_id  # noqa: E402

log = logging.getLogger("benchmarks.retrieval")

WORD = re.compile(r"\S+")
NOISE_SIGMA = 0.02  # per-dimension noise on unit 384-d vectors: ‖noise‖ ≈ 0.39, cosine to the source ≈ 0.93
SWAP_RATE = 0.15
FOLDERS = 20  # synthetic folders, so the filtered query has something realistic to select (1/20 of the chunks)
UPSERT_BATCH = 512


@dataclass
class SourceChunk:
    """A real chunk: the text the encoders see, its embedding, and its payload."""

    text: str
    vector: np.ndarray
    payload: dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation, in the units given."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def summary(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean in milliseconds."""
    ms = [1000 * s for s in samples_s]
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"), "n": len(ms)}


# ----------------------------------------------------------------------------------------------- corpus
def real_chunks(dataset: Path, settings: Settings, embedder: Embedder, base: int, seed: int) -> list[SourceChunk]:
    """Chunk the dataset like ingestion does and embed a random sample of `base` chunks."""
    ds = load_beir(dataset)
    budget = min(settings.chunk_tokens, embedder.max_tokens - TRAIL_RESERVE)
    chunker = Chunker(embedder.count_tokens, budget, settings.chunk_overlap)
    chunks = []
    for d in tqdm(ds.corpus.values(), desc="chunk corpus", unit="doc", leave=False):
        if not d.text.strip():
            continue
        path = f"/bench/{ds.name}/{d.id}"
        doc = Document(path=Path(path), file_type="text", title=d.title, text=d.text, sections=[Section(d.text, 0)])
        chunks.extend(chunker.chunk(doc, f"real-{d.id}", path))
    rng = random.Random(seed)
    sample = rng.sample(chunks, min(base, len(chunks)))
    texts = [embedding_text(c) for c in sample]
    vectors = []
    for i in tqdm(range(0, len(texts), 64), desc=f"embed {len(texts)} base chunks", unit="batch"):
        vectors.append(embedder.embed(texts[i : i + 64]))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    return [SourceChunk(t, v, c.payload()) for t, v, c in zip(texts, matrix, sample, strict=True)]


def synthesise(sources: Sequence[SourceChunk], n: int, seed: int) -> tuple[list[str], np.ndarray, list[dict]]:
    """`n` chunks: the real ones first, then perturbed copies (word swaps + vector noise)."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    vocab = sorted({w for s in sources for w in WORD.findall(s.text)})
    texts: list[str] = []
    vectors = np.empty((n, sources[0].vector.shape[0]), dtype=np.float32)
    payloads: list[dict] = []
    now = time.time()
    for i in tqdm(range(n), desc=f"synthesise {n:,} chunks", unit="chunk", leave=False, mininterval=0.5):
        src = sources[i % len(sources)]
        copy = i // len(sources)
        if copy == 0:
            text, vec = src.text, src.vector
        else:
            words = src.text.split(" ")
            # swap words at random, keeping the length: BM25 sees realistic term statistics, not exact duplicates
            text = " ".join(pyrng.choice(vocab) if pyrng.random() < SWAP_RATE else w for w in words)
            vec = src.vector + rng.normal(0.0, NOISE_SIGMA, src.vector.shape).astype(np.float32)
            vec /= np.linalg.norm(vec)
        vectors[i] = vec
        texts.append(text)
        doc = f"syn-{copy}-{src.payload['doc_id']}"
        path = f"/bench/f{i % FOLDERS}/{doc}.txt"
        payloads.append({**src.payload, "doc_id": doc, "text": text, "path": path, "paths": [path],
                         "folders": folders_of(path), "ingested_at": now, "embedding_model": "bench"})
    return texts, vectors, payloads


# ----------------------------------------------------------------------------------------------- timing
def measure(queries: Sequence[str], fn: Callable[[str], dict[str, float]], warmup: int = 5,
            desc: str = "") -> dict[str, list[float]]:
    """Run `fn` per query (after `warmup` untimed calls); collect each stage's seconds plus `total`."""
    for q in queries[:warmup]:
        fn(q)
    out: dict[str, list[float]] = {}
    gc.disable()  # a collection pause inside one query would land in p95 and measure Python, not retrieval
    try:
        for q in tqdm(queries, desc=desc, unit="q", leave=False):
            t = time.perf_counter()
            stages = fn(q)
            total = time.perf_counter() - t
            for k, v in {**stages, "total": total}.items():
                out.setdefault(k, []).append(v)
    finally:
        gc.enable()
    return out


def stand_in_reranker(settings: Settings) -> tuple[Reranker, str]:
    """The configured reranker if it loads, else the packaged MiniLM as a cross-encoder with an untrained head."""
    configured = Reranker(settings.reranker_model)
    if configured.available:
        return configured, configured.model_name or ""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(resolve_embedding_model("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=256,
                         device="cpu")
    return (Reranker.from_model(model, name="stand-in MiniLM-L6 (untrained head)"),
            "stand-in: all-MiniLM-L6-v2 body + untrained 1-label head (latency only)")


def bench_size(n: int, sources: Sequence[SourceChunk], queries: Sequence[str], settings: Settings,
               embedder: Embedder, reranker: Reranker, *, baseline: bool, optimize: bool, seed: int,
               rerank_queries: int = 20) -> dict[str, Any]:
    """Build an n-chunk Qdrant Edge store and a rank-bm25 baseline over the same chunks; time both."""
    result: dict[str, Any] = {"chunks": n, "stages": {}, "baseline": {}, "build": {}}
    texts, vectors, payloads = synthesise(sources, n, seed)
    bm25 = get_bm25()
    with tempfile.TemporaryDirectory(prefix="brain-bench-") as tmp:
        backend = Backend(root=Path(tmp) / "qdrant")
        try:
            store = backend.collection("bench", embedder.dim, {"embedding_model": embedder.model_id})
            t = time.perf_counter()
            for i in tqdm(range(0, n, UPSERT_BATCH), desc=f"upsert {n:,}", unit="batch", leave=False):
                store.upsert([PointData(point_id(payloads[j]["doc_id"], j), vectors[j], bm25.document(texts[j]),
                                        payloads[j]) for j in range(i, min(i + UPSERT_BATCH, n))])
            store.flush()
            result["build"]["qdrant_upsert_s"] = round(time.perf_counter() - t, 1)
            retriever = Retriever(settings, store, embedder, bm25, reranker=reranker)
            k = settings.retrieval_k

            def hybrid(q: str, **kw: Any) -> dict[str, float]:
                return retriever.search(q, k=k, **kw).timings

            def encode_split(q: str) -> dict[str, float]:
                t0 = time.perf_counter()
                embedder.embed([q])
                t1 = time.perf_counter()
                bm25.query(q)
                return {"dense": t1 - t0, "bm25": time.perf_counter() - t1}

            folder = SearchFilters(folder="/bench/f3")
            runs = {
                "hybrid": lambda q: hybrid(q, rerank=False, stage_scores=False),
                "hybrid + folder filter": lambda q: hybrid(q, rerank=False, stage_scores=False, filters=folder),
                "hybrid + stage scores": lambda q: hybrid(q, rerank=False, stage_scores=True),
                "hybrid + rerank": lambda q: hybrid(q, rerank=True, stage_scores=False),
                "encode split": encode_split,
            }
            for name, fn in runs.items():
                # a CPU cross-encoder costs seconds per query: time it on fewer queries
                qs = queries[:rerank_queries] if "rerank" in name else queries
                result["stages"][name] = {s: summary(v) for s, v in measure(qs, fn, desc=f"{n:,} {name}").items()}
            if optimize and hasattr(store, "optimize"):
                t = time.perf_counter()
                store.optimize()  # type: ignore[attr-defined]
                result["build"]["qdrant_optimize_s"] = round(time.perf_counter() - t, 1)
                samples = measure(queries, runs["hybrid"], desc=f"{n:,} hybrid (optimised)")
                result["stages"]["hybrid (optimised)"] = {s: summary(v) for s, v in samples.items()}
        finally:
            backend.close()

    if baseline:
        t = time.perf_counter()
        ids = [str(i) for i in range(n)]
        rb = RankBm25Index(ids, texts)
        result["build"]["rank_bm25_build_s"] = round(time.perf_counter() - t, 1)
        dense = DenseIndex(ids, vectors)
        depth = settings.prefetch_k  # each retriever returns as many chunks as one prefetch branch does

        def ensemble(q: str) -> dict[str, float]:
            t0 = time.perf_counter()
            vec = embedder.embed([q])[0]
            t1 = time.perf_counter()
            sparse = [i for i, _ in rb.search(q, depth)]
            t2 = time.perf_counter()
            near = [i for i, _ in dense.search(vec, depth)]
            t3 = time.perf_counter()
            weighted_rrf([sparse, near], ENSEMBLE_WEIGHTS, ENSEMBLE_C)[: settings.retrieval_k]
            return {"encode": t1 - t0, "bm25": t2 - t1, "dense": t3 - t2, "fuse": time.perf_counter() - t3}

        result["baseline"] = {s: summary(v) for s, v in measure(queries, ensemble, desc=f"{n:,} rank-bm25").items()}
    return result


# ----------------------------------------------------------------------------------------------- report
def print_tables(results: Sequence[dict[str, Any]], console: Console) -> None:
    """One table: per corpus size, each pipeline's stages with p50/p95 in milliseconds."""
    table = Table(title="query latency per stage (ms)")
    for col in ("chunks", "pipeline", "stage", "p50", "p95", "mean"):
        table.add_column(col, justify="left" if col in ("pipeline", "stage") else "right")
    names = {"search": "fuse (Qdrant)", "encode": "encode", "rerank": "rerank", "total": "total",
             "dense": "dense", "bm25": "bm25", "fuse": "fuse"}
    for r in results:
        n = f"{r['chunks']:,}"
        for pipeline, stages in [*r["stages"].items(), ("rank-bm25 + dense (LangChain)", r["baseline"])]:
            for stage, s in stages.items():
                label = names.get(stage, stage)
                style = "bold" if stage == "total" else ""
                table.add_row(n, pipeline, label, f"[{style}]{s['p50_ms']:.1f}[/]" if style else f"{s['p50_ms']:.1f}",
                              f"{s['p95_ms']:.1f}", f"{s['mean_ms']:.1f}")
                n = ""
    console.print(table)
    for r in results:
        build = ", ".join(f"{k.removesuffix('_s')} {v} s" for k, v in r["build"].items())
        console.print(f"[dim]{r['chunks']:,} chunks, build: {build}[/]")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=100, help="timed queries per pipeline (pyfaq questions)")
    ap.add_argument("--rerank-queries", type=int, default=20, help="timed queries for the (slow) rerank stage")
    ap.add_argument("--base", type=int, default=2000, help="real chunks embedded; the rest are perturbed copies")
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "pyfaq")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    ap.add_argument("--optimize", action="store_true", help="also time Qdrant Edge's optimize() and query after it")
    ap.add_argument("--no-baseline", action="store_true", help="skip the rank-bm25 baseline")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=max(Console().width, 130))

    settings = get_settings()
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    queries = list(load_beir(args.dataset).queries.values())[: args.queries]
    sources = real_chunks(args.dataset, settings, embedder, args.base, args.seed)
    reranker, rerank_label = stand_in_reranker(settings)
    load = os.getloadavg()
    results = []
    for n in args.sizes:
        results.append(bench_size(n, sources, queries, settings, embedder, reranker, baseline=not args.no_baseline,
                                  optimize=args.optimize, seed=args.seed, rerank_queries=args.rerank_queries))
        print_tables(results[-1:], console)
    payload = {
        "environment": {"created": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                        "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in load],
                        "torch_threads": settings.torch_threads, "embedding_model": embedder.model_id,
                        "reranker": rerank_label, "base_chunks": len(sources), "queries": len(queries),
                        "rerank_queries": min(args.rerank_queries, len(queries))},
        "settings": {"fusion": settings.fusion, "dense_weight": settings.dense_weight,
                     "bm25_weight": settings.bm25_weight, "rrf_k": settings.rrf_k, "prefetch_k": settings.prefetch_k,
                     "retrieval_k": settings.retrieval_k, "rerank_candidates": settings.rerank_candidates},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    console.print(f"reranker: {rerank_label}; wrote {args.out}")
    goal = [r["stages"]["hybrid"]["total"]["p95_ms"] for r in results if r["chunks"] >= 100_000]
    if goal:
        verdict = "met" if max(goal) < 150 else "missed"
        console.print(f"goal p95 < 150 ms for hybrid without rerank at 100k chunks: {verdict} ({max(goal):.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
