"""Retrieval quality on BEIR-format datasets, through the real ingestion pipeline and the real store.

    python -m retrieval.eval.harness --dataset ../shared/data/pyfaq [--dataset ...] \
        [--out benchmarks/results/eval.json] [--fusion-grid]

Each dataset's corpus is ingested with `Ingestor.add_document` (one Document per BEIR document, its text as
one Section, so long documents are chunked exactly like a user's files) into a scratch Qdrant Edge store
under a temporary folder. Chunk hits are mapped back to BEIR ids through the virtual path, keeping each
document's best rank, and scored with `ranx` (nDCG@10, Recall@10/100, MRR@10) for: BM25 alone, dense alone,
hybrid RRF and DBSF fused inside Qdrant, the product's `Retriever.search` with the current settings, the same
plus the reranker (when one loads), and the LangChain textbook baseline (rank-bm25 + dense, weighted RRF).

`--fusion-grid` sweeps RRF weights, `rrf_k` and prefetch depth (plus DBSF) and estimates, by repeated
k-fold cross-validation over queries, what "pick the best configuration on data" is worth on unseen
queries, so a recommended default is not just the luckiest point of the grid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from core.encoders import Embedder, get_bm25, get_embedder
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.types import Chunk, Document, Hit, Section
from ingest.chunking import embedding_text
from ingest.pipeline import Ingestor
from retrieval.eval.baseline import ENSEMBLE_C, ENSEMBLE_WEIGHTS, EnsembleBaseline, RankBm25Index
from retrieval.eval.beir import BeirDataset, DatasetUnavailable, load_beir
from retrieval.fusion import rrf
from retrieval.rerank import Reranker
from retrieval.search import Retriever
from store.base import QuerySpec, Record, Store
from store.factory import Backend
from store.manifest import Manifest

log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DOC_DEPTH = 100  # documents per query handed to ranx (Recall@100 needs 100)
DEFAULT_CHUNK_DEPTH = 300  # chunks fetched per query so that ~100 distinct documents survive de-duplication
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_DATASETS = (SHARED_DATA / "pyfaq", SHARED_DATA / "scifact")
VIRTUAL_ROOT = "/beir"
COLLECTION = "beir"
MARKER = "eval-ingest.json"


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class FusionConfig:
    """How the dense and BM25 branches are fused inside Qdrant."""

    fusion: str = "rrf"  # rrf | dbsf
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    rrf_k: int = 60
    prefetch: int = DEFAULT_CHUNK_DEPTH

    @property
    def label(self) -> str:
        """Short row label, e.g. `rrf 3:1 k=60 pf=50`."""
        if self.fusion == "dbsf":
            return f"dbsf pf={self.prefetch}"
        return f"rrf {self.dense_weight:g}:{self.bm25_weight:g} k={self.rrf_k} pf={self.prefetch}"


@dataclass
class MethodResult:
    """One row of the table: a retrieval method's mean metrics on one dataset."""

    method: str
    group: str  # branch | fusion | client | product | rerank | baseline | grid
    config: dict[str, Any]
    metrics: dict[str, float] | None = None
    ms_per_query: float | None = None
    note: str = ""
    per_query: dict[str, list[float]] | None = field(default=None, repr=False)  # ndcg@10 per query (for CV)

    def to_json(self, with_per_query: bool = False) -> dict[str, Any]:
        """Serialisable form (per-query values only on request: they are long)."""
        d = asdict(self)
        if not with_per_query:
            d.pop("per_query")
        return d


@dataclass
class DatasetReport:
    """Everything measured on one dataset (or why it was skipped)."""

    name: str
    path: str
    status: str  # ok | skipped
    reason: str = ""
    queries: int = 0
    documents: int = 0
    chunks: int = 0
    ingest_seconds: float = 0.0
    reused_store: bool = False
    rows: list[MethodResult] = field(default_factory=list)
    grid: list[MethodResult] = field(default_factory=list)
    selection: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        d = {k: v for k, v in asdict(self).items() if k not in ("rows", "grid")}
        d["rows"] = [r.to_json() for r in self.rows]
        d["grid"] = [r.to_json() for r in self.grid]
        return d


# --------------------------------------------------------------------------------------------- scoring
def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, list[str]]) -> tuple[dict[str, float], list[float]]:
    """ranx metrics for ranked document-id lists; returns (means, per-query nDCG@10 in sorted query order)."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    # Scores only encode the rank: ranx re-sorts by score, so distinct descending values keep our order.
    scored = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in run.items() if docs}
    if not scored:
        zeros = {m: 0.0 for m in METRICS}
        return zeros, [0.0] * len(qrels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's uint64→int64 cast warning inside ranx
        qr, rr = Qrels.from_dict(qrels), Run.from_dict(scored)
        means = ranx_evaluate(qr, rr, list(METRICS), make_comparable=True)
        per_query = ranx_evaluate(qr, rr, "ndcg@10", make_comparable=True, return_mean=False)
    return {m: float(means[m]) for m in METRICS}, [float(x) for x in per_query]


# --------------------------------------------------------------------------------------------- scratch index
class _QueryVectors:
    """Stands in for the embedder inside `Retriever`: query vectors are computed once, in one batch.

    Every method sees the same vectors, and the grid does not re-embed each query per configuration.
    """

    def __init__(self, embedder: Embedder, queries: Sequence[str]) -> None:
        self._embedder = embedder
        texts = list(dict.fromkeys(queries))
        vecs = embedder.embed(texts, show_progress=False) if texts else np.zeros((0, embedder.dim), np.float32)
        self._vecs = dict(zip(texts, vecs, strict=True))

    def _vec(self, text: str) -> np.ndarray:
        if text not in self._vecs:
            self._vecs[text] = self._embedder.embed([text])[0]
        return self._vecs[text]

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Cached embeddings, one row per text."""
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self._embedder.dim), np.float32)

    def embed_query(self, text: str) -> list[float]:
        """One cached query vector."""
        return self._vec(text).tolist()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


def _virtual_path(dataset: str, doc_id: str) -> str:
    # quote() keeps ids with slashes or spaces as one path component, so folders_of() stays shallow.
    return f"{VIRTUAL_ROOT}/{dataset}/{quote(doc_id, safe='')}"


def _doc_of_path(path: str) -> str:
    return unquote(path.rsplit("/", 1)[-1])


class ScratchIndex:
    """A BEIR corpus ingested through the real pipeline into a scratch Qdrant Edge store.

    Documents with identical text share point ids in the pipeline (content-addressed), so a hit on one
    of them stands for all: `twins` maps each id to every BEIR id with the same text.
    """

    def __init__(self, dataset: BeirDataset, settings: Settings, embedder: Embedder, workdir: Path) -> None:
        self.dataset = dataset
        self.embedder = embedder
        self.workdir = workdir
        self.settings = settings.model_copy(update={"data_dir": workdir / "data", "qdrant_url": None,
                                                    "collection": COLLECTION})
        self.backend: Backend | None = None
        self.store: Store | None = None
        self.ingest_seconds = 0.0
        self.reused = False
        groups: dict[str, list[str]] = {}
        for d in dataset.corpus.values():
            groups.setdefault(hashlib.sha256(d.text.encode("utf-8")).hexdigest(), []).append(d.id)
        self.twins = {i: ids for ids in groups.values() for i in ids}

    def _marker(self) -> dict[str, Any]:
        s = self.settings
        return {"dataset": self.dataset.fingerprint(), "embedding_model": self.embedder.model_id,
                "chunk_tokens": s.chunk_tokens, "chunk_overlap": s.chunk_overlap}

    def open(self, progress: bool = True) -> ScratchIndex:
        """Ingest the corpus (or reopen a scratch store that already holds exactly this corpus)."""
        marker_path = self.workdir / MARKER
        reusable = marker_path.exists() and json.loads(marker_path.read_text()) == self._marker()
        if not reusable and self.workdir.exists():
            shutil.rmtree(self.workdir / "data", ignore_errors=True)
            marker_path.unlink(missing_ok=True)
        (self.settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.backend = Backend(root=self.settings.qdrant_path)
        self.store = self.backend.collection(COLLECTION, self.embedder.dim, {"embedding_model": self.embedder.model_id})
        if reusable:
            self.reused = True
            return self
        started = time.perf_counter()
        manifest = Manifest(self.settings.manifest_path)
        try:
            ingestor = Ingestor(self.settings, self.backend, manifest=manifest, embedder=self.embedder)
            docs = list(self.dataset.corpus.values())
            for d in tqdm(docs, desc=f"ingest {self.dataset.name}", unit="doc", disable=not progress, smoothing=0.05):
                if not d.text.strip():
                    continue
                key = _virtual_path(self.dataset.name, d.id)
                doc = Document(path=Path(key), file_type="text", title=d.title, text=d.text,
                               sections=[Section(text=d.text, start=0)])
                ingestor.add_document(doc, key)
            self.store.flush()
        finally:
            manifest.close()
        self.ingest_seconds = time.perf_counter() - started
        marker_path.write_text(json.dumps(self._marker()))
        return self

    def close(self) -> None:
        """Release the store (the caller removes the folder)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def chunks(self) -> list[Record]:
        """Every stored chunk with its payload."""
        assert self.store is not None
        return list(self.store.scroll())

    def docs_of(self, paths: Sequence[str]) -> list[str]:
        """Ranked chunk paths → ranked BEIR ids, each document at its best rank, cut at `DOC_DEPTH`."""
        out: dict[str, None] = {}
        for p in paths:
            for doc in self.twins.get(_doc_of_path(p), [_doc_of_path(p)]):
                out.setdefault(doc, None)
            if len(out) >= DOC_DEPTH:
                break
        return list(out)[:DOC_DEPTH]


@contextmanager
def scratch_dir(workdir: Path | None, name: str) -> Iterator[Path]:
    """`workdir/name` when the caller keeps a store between runs, else a temporary folder removed afterwards."""
    if workdir is not None:
        path = workdir.expanduser().resolve() / name
        if path.is_relative_to(PROJECT_ROOT):
            raise ValueError(f"keep scratch stores outside the repository (got {path})")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"brain-eval-{name}-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------------------------- methods
Searcher = Callable[[str], list[str]]  # query text → ranked chunk paths


def _run(name: str, group: str, config: dict[str, Any], ds: BeirDataset, index: ScratchIndex, search: Searcher,
         progress: bool, note: str = "") -> MethodResult:
    run: dict[str, list[str]] = {}
    started = time.perf_counter()
    for qid, text in tqdm(ds.queries.items(), desc=f"  {name}", unit="q", leave=False, disable=not progress):
        run[qid] = index.docs_of(search(text))
    elapsed = time.perf_counter() - started
    means, per_query = evaluate_run(ds.qrels, run)
    return MethodResult(name, group, config, means, 1000 * elapsed / max(len(ds.queries), 1), note,
                        {"ndcg@10": per_query})


def _paths(records: Sequence[Record] | Sequence[Hit]) -> list[str]:
    return [r.payload.get("path", "") for r in records]


def _hybrid_searcher(index: ScratchIndex, qv: _QueryVectors, cfg: FusionConfig, depth: int) -> Searcher:
    bm25 = get_bm25()
    store = index.store
    assert store is not None

    def search(text: str) -> list[str]:
        spec = QuerySpec(dense=qv.embed_query(text), sparse=bm25.query(text), limit=depth,
                         prefetch_limit=cfg.prefetch, fusion=cfg.fusion, rrf_k=cfg.rrf_k,  # type: ignore[arg-type]
                         weights=(cfg.dense_weight, cfg.bm25_weight))
        return _paths(store.query(spec))

    return search


# Qdrant's weighted RRF is not the textbook Σ w/(k + rank): it scores 1 / (rank / w + k - 1)
# (lib/segment/src/common/reciprocal_rank_fusion.rs), i.e. a branch of weight w behaves like plain RRF with
# its own k' = w·(k-1), scaled by w. A larger weight makes that branch count more for *presence* but flattens
# its *order*; how much depends on k. So the sweep goes both ways (dense up, and BM25 down) across k.
GRID_WEIGHTS = ((1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0), (8.0, 1.0),
                (1.0, 0.5), (1.0, 0.33), (1.0, 0.25), (1.0, 0.15))
GRID_RRF_K = (2, 10, 30, 60)  # 2 is Qdrant's own default


def fusion_grid(depth: int) -> list[FusionConfig]:
    """The sweep: (dense, bm25) RRF weights × rrf_k × prefetch depth, plus DBSF at each prefetch depth."""
    prefetches = sorted({50, 100, depth})
    grid = [FusionConfig("rrf", wd, wb, k, pf) for wd, wb in GRID_WEIGHTS for k in GRID_RRF_K for pf in prefetches]
    grid += [FusionConfig("dbsf", 1.0, 1.0, 60, pf) for pf in prefetches]
    return grid


def _client_searcher(retriever: Retriever, weights: tuple[float, float], k: int, depth: int) -> Searcher:
    """Textbook weighted RRF, Σ w/(k + rank), done client-side with `retrieval.fusion.rrf` over the two branches."""

    def search(text: str) -> list[str]:
        lists = [retriever.branch(text, "dense", depth), retriever.branch(text, "bm25", depth)]
        return _paths(rrf(lists, k=k, weights=list(weights)))

    return search


def cross_validate(rows: Sequence[MethodResult], folds: int = 5, repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    """Repeated k-fold CV of "choose the configuration with the best nDCG@10 on the training queries".

    Returns the mean held-out nDCG@10 of that procedure and how often each configuration won a fold:
    a fair estimate of what tuning on this data is worth on unseen queries.
    """
    names = [r.method for r in rows]
    matrix = np.array([r.per_query["ndcg@10"] for r in rows if r.per_query])  # configs × queries
    n = matrix.shape[1]
    rng = np.random.default_rng(seed)
    held_out: list[float] = []
    wins: dict[str, int] = {}
    for _ in range(repeats):
        order = rng.permutation(n)
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            best = int(np.argmax(matrix[:, train].mean(axis=1)))
            wins[names[best]] = wins.get(names[best], 0) + 1
            held_out.extend(matrix[best, test].tolist())
    return {"folds": folds, "repeats": repeats, "cv_ndcg@10": float(np.mean(held_out)),
            "chosen": dict(sorted(wins.items(), key=lambda kv: -kv[1]))}


def paired_randomization(a: Sequence[float], b: Sequence[float], trials: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip randomization test on per-query differences a − b."""
    diff = np.asarray(a) - np.asarray(b)
    if not diff.any():
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(trials, diff.size))
    observed = abs(diff.mean())
    return float((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).mean())


def evaluate_dataset(ds: BeirDataset, *, settings: Settings, embedder: Embedder, workdir: Path,
                     depth: int = DEFAULT_CHUNK_DEPTH, grid: bool = False, reranker: Reranker | None = None,
                     progress: bool = True) -> DatasetReport:
    """Ingest one dataset into a scratch store under `workdir` and measure every method on it."""
    report = DatasetReport(ds.name, str(ds.path), "ok", queries=len(ds.queries), documents=len(ds.corpus),
                           warnings=list(ds.warnings))
    index = ScratchIndex(ds, settings, embedder, workdir).open(progress)
    try:
        assert index.store is not None
        report.chunks = index.store.count()
        report.ingest_seconds = round(index.ingest_seconds, 1)
        report.reused_store = index.reused
        qv = _QueryVectors(embedder, list(ds.queries.values()))
        bm25 = get_bm25()
        s = index.settings
        retriever = Retriever(s, index.store, qv, bm25, reranker=Reranker(None))  # type: ignore[arg-type]
        rows = report.rows

        # Branches alone, through the same Retriever.branch the product exposes.
        for mode in ("bm25", "dense"):
            rows.append(_run(mode, "branch", {"mode": mode, "depth": depth}, ds, index,
                             lambda q, m=mode: _paths(retriever.branch(q, m, depth)), progress))

        # Fusion inside Qdrant at the same candidate depth as the branches (so Recall@100 compares fairly).
        fusions = [FusionConfig("rrf", float(w), 1.0, 60, depth) for w in (1, 2, 3, 4)]
        fusions.append(FusionConfig("dbsf", 1.0, 1.0, 60, depth))
        for cfg in fusions:
            name = "hybrid dbsf" if cfg.fusion == "dbsf" else f"hybrid rrf {cfg.dense_weight:g}:{cfg.bm25_weight:g}"
            rows.append(_run(name, "fusion", asdict(cfg), ds, index, _hybrid_searcher(index, qv, cfg, depth), progress))
        # The same weights with textbook semantics, fused client-side: shows what Qdrant's weighting changes.
        for w in (1.0, 2.0, 3.0, 4.0):
            rows.append(_run(f"client wRRF {w:g}:1", "client", {"weights": [w, 1.0], "rrf_k": 60, "depth": depth}, ds,
                             index, _client_searcher(retriever, (w, 1.0), 60, depth), progress,
                             note="Σ w/(60+rank), retrieval.fusion.rrf"))

        # The product path end to end (multi-query fusion, overlap hygiene) with the current settings.
        product = {"fusion": s.fusion, "dense_weight": s.dense_weight, "bm25_weight": s.bm25_weight,
                   "rrf_k": s.rrf_k, "prefetch_k": s.prefetch_k}
        label = f"search() {s.fusion}"
        if s.fusion == "rrf":
            label += f" {s.dense_weight:g}:{s.bm25_weight:g} k={s.rrf_k}"
        rows.append(_run(label, "product", product, ds, index,
                         lambda q: _paths(retriever.search(q, k=depth, rerank=False, stage_scores=False).hits),
                         progress, note="current settings, end to end"))

        reranker = reranker or Reranker(s.reranker_model)
        if reranker.available:
            rr = Retriever(s, index.store, qv, bm25, reranker=reranker)  # type: ignore[arg-type]
            rows.append(_run(f"{label} + rerank", "rerank", {**product, "reranker": reranker.model_name,
                                                             "candidates": s.rerank_candidates}, ds, index,
                             lambda q: _paths(rr.search(q, k=depth, rerank=True, stage_scores=False).hits),
                             progress, note=f"top {s.rerank_candidates} reranked"))
        else:
            rows.append(MethodResult(f"{label} + rerank", "rerank", {**product}, note=f"skipped: {reranker.status}"))

        # LangChain's textbook hybrid over the very same chunks (and the same text the encoders see).
        records = index.chunks()
        started = time.perf_counter()
        rb = RankBm25Index([r.payload.get("path", "") + "#" + str(r.payload.get("chunk_index", 0)) for r in records],
                           [embedding_text(_chunk_view(r)) for r in records])
        build = time.perf_counter() - started

        def dense_ids(q: str, k: int) -> list[str]:
            return [h.payload.get("path", "") + "#" + str(h.chunk_index) for h in retriever.branch(q, "dense", k)]

        ensemble = EnsembleBaseline(rb, dense_ids)
        strip = _strip_chunk_suffix
        rows.append(_run("rank-bm25 (text.split)", "baseline", {"tokenizer": "text.split"}, ds, index,
                         lambda q: strip([i for i, _ in rb.search(q, depth)]), progress,
                         note=f"BM25Okapi, build {build:.1f} s"))
        rows.append(_run("rank-bm25 + dense (Ensemble)", "baseline",
                         {"weights": list(ENSEMBLE_WEIGHTS), "c": ENSEMBLE_C, "k": depth}, ds, index,
                         lambda q: strip([i for i, _ in ensemble.search(q, depth)]), progress,
                         note="EnsembleRetriever defaults: weights 0.5/0.5, c=60"))

        if grid:
            report.grid, report.selection = _grid(ds, index, qv, depth, rows, progress)
    finally:
        index.close()
    return report


def _chunk_view(r: Record) -> Chunk:
    """A stored payload back as a `Chunk`, so the baseline indexes exactly the text our encoders saw."""
    p = r.payload
    return Chunk(doc_id=p.get("doc_id", ""), chunk_index=int(p.get("chunk_index", 0)), text=p.get("text", ""),
                 start=int(p.get("start", 0)), end=int(p.get("end", 0)), page=p.get("page"),
                 heading_path=tuple(p.get("heading_path") or ()), title=p.get("title", ""), path=p.get("path", ""),
                 file_type=p.get("file_type", ""))


def _strip_chunk_suffix(ids: Sequence[str]) -> list[str]:
    return [i.rsplit("#", 1)[0] for i in ids]


def _grid(ds: BeirDataset, index: ScratchIndex, qv: _QueryVectors, depth: int, rows: Sequence[MethodResult],
          progress: bool) -> tuple[list[MethodResult], dict[str, Any]]:
    configs = fusion_grid(depth)
    results: list[MethodResult] = []
    for cfg in tqdm(configs, desc="fusion grid", unit="cfg", disable=not progress):
        results.append(_run(cfg.label, "grid", asdict(cfg), ds, index, _hybrid_searcher(index, qv, cfg, depth), False))
    dense = next(r for r in rows if r.method == "dense")
    bm25 = next(r for r in rows if r.method == "bm25")
    # "No fusion" is a legitimate outcome of tuning, so the single branches compete in the selection too.
    candidates = [*results, dense, bm25]
    best = max(candidates, key=lambda r: (r.metrics or {}).get("ndcg@10", 0.0))
    assert best.per_query and dense.per_query
    selection = {
        "best_on_all_queries": best.method,
        "best_ndcg@10": (best.metrics or {}).get("ndcg@10"),
        "dense_ndcg@10": (dense.metrics or {}).get("ndcg@10"),
        "p_best_vs_dense": paired_randomization(best.per_query["ndcg@10"], dense.per_query["ndcg@10"]),
        **cross_validate(candidates),
    }
    return sorted(results, key=lambda r: -(r.metrics or {}).get("ndcg@10", 0.0)), selection


# --------------------------------------------------------------------------------------------- reporting
def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def print_report(report: DatasetReport, console: Console, grid_rows: int = 15) -> None:
    """The results table of one dataset (and the grid's best rows and CV estimate, when swept)."""
    if report.status != "ok":
        console.print(f"[yellow]skipped {report.name}[/]: {report.reason}")
        return
    title = (f"{report.name}: {report.queries} queries, {report.documents} documents, {report.chunks} chunks"
             + (" (reused store)" if report.reused_store else f", ingested in {report.ingest_seconds:.0f} s"))
    table = Table(title=title)
    for col in ("method", *METRICS, "ms/q", "note"):
        table.add_column(col, justify="left" if col in ("method", "note") else "right")
    dense = next((r.metrics["ndcg@10"] for r in report.rows if r.method == "dense" and r.metrics), None)
    for r in report.rows:
        m = r.metrics or {}
        ndcg = _fmt(m.get("ndcg@10"))
        if dense is not None and m.get("ndcg@10") is not None and m["ndcg@10"] > dense:
            ndcg = f"[green]{ndcg}[/]"
        table.add_row(r.method, ndcg, *(_fmt(m.get(k)) for k in METRICS[1:]),
                      "" if r.ms_per_query is None else f"{r.ms_per_query:.0f}", r.note)
    console.print(table)
    for w in report.warnings:
        console.print(f"[yellow]![/] {w}")
    if report.grid and report.selection:
        g = Table(title=f"{report.name}: fusion grid, best {grid_rows} of {len(report.grid)} by nDCG@10")
        for col in ("config", *METRICS):
            g.add_column(col, justify="left" if col == "config" else "right")
        for r in report.grid[:grid_rows]:
            m = r.metrics or {}
            g.add_row(r.method, *(_fmt(m.get(k)) for k in METRICS))
        console.print(g)
        sel = report.selection
        chosen = ", ".join(f"{k} ×{v}" for k, v in list(sel["chosen"].items())[:4])
        console.print(f"best on all queries: [bold]{sel['best_on_all_queries']}[/] nDCG@10 {sel['best_ndcg@10']:.3f} "
                      f"vs dense {sel['dense_ndcg@10']:.3f} (paired randomization p={sel['p_best_vs_dense']:.3f}); "
                      f"{sel['repeats']}×{sel['folds']}-fold CV of pick-the-best: held-out nDCG@10 "
                      f"{sel['cv_ndcg@10']:.3f}; folds chose {chosen}")


def _environment(settings: Settings, embedder: Embedder) -> dict[str, Any]:
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "embedding_model": embedder.model_id,
            "chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap,
            "bm25": "qdrant_edge.Bm25 (English tokenizer, stop words, Snowball stemming; IDF by Qdrant)"}


def run(datasets: Sequence[Path], *, out: Path | None = None, split: str = "test", depth: int = DEFAULT_CHUNK_DEPTH,
        grid: bool = False, workdir: Path | None = None, reranker: str | None = None, max_queries: int | None = None,
        settings: Settings | None = None, embedder: Embedder | None = None, console: Console | None = None,
        progress: bool = True) -> list[DatasetReport]:
    """Evaluate every dataset (skipping, with the reason, those not available yet); print and write JSON."""
    console = console or Console(width=max(Console().width, 150))  # a log file is not an 80-column terminal
    settings = settings or get_settings()
    embedder = embedder or get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    rr = Reranker(reranker or settings.reranker_model)
    reports: list[DatasetReport] = []
    for path in datasets:
        try:
            ds = load_beir(path, split=split, max_queries=max_queries)
        except DatasetUnavailable as exc:
            reports.append(DatasetReport(Path(path).name, str(path), "skipped", reason=str(exc)))
            print_report(reports[-1], console)
            continue
        with scratch_dir(workdir, ds.name) as scratch:
            report = evaluate_dataset(ds, settings=settings, embedder=embedder, workdir=scratch, depth=depth,
                                      grid=grid, reranker=rr, progress=progress)
        reports.append(report)
        print_report(report, console)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": _environment(settings, embedder), "metrics": list(METRICS),
                   "doc_depth": DOC_DEPTH, "chunk_depth": depth, "datasets": [r.to_json() for r in reports]}
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit 0 when at least one dataset was evaluated."""
    ap = argparse.ArgumentParser(prog="python -m retrieval.eval.harness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", type=Path,
                    help="BEIR folder (repeatable); default: ../shared/data/pyfaq and ../shared/data/scifact")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "eval.json")
    ap.add_argument("--split", default="test")
    ap.add_argument("--depth", type=int, default=DEFAULT_CHUNK_DEPTH, help="chunks fetched per query and branch")
    ap.add_argument("--fusion-grid", action="store_true", help="sweep fusion settings and cross-validate the choice")
    ap.add_argument("--workdir", type=Path, help="keep scratch stores here (outside the repo) and reuse them")
    ap.add_argument("--reranker", help="CrossEncoder name or path (default: RERANKER_MODEL)")
    ap.add_argument("--max-queries", type=int, help="first N judged queries only (smoke runs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the model-loading bar, not ours
    reports = run(args.dataset or list(DEFAULT_DATASETS), out=args.out, split=args.split, depth=args.depth,
                  grid=args.fusion_grid, workdir=args.workdir, reranker=args.reranker, max_queries=args.max_queries,
                  progress=not args.quiet)
    return 0 if any(r.status == "ok" for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
