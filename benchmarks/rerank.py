"""The reranker gate: retrieval quality with and without each candidate reranker, and its latency, in one run.

    python benchmarks/rerank.py [--model DIR ...] [--max-length 256 128] [--int8] [--candidates 10 20 30]

Evaluation sets (none of them used for training; see `retrieval/training/data.py`):
- pyfaq (`../shared/data/pyfaq`): the Python FAQ structural set, ingested through the real pipeline by the
  harness's `ScratchIndex`; document-level qrels;
- SciFact test (`../shared/data/scifact`), when its corpus is present (skipped with the reason otherwise);
- pydocs: the answer-quality question set (`benchmarks/questions/pydocs.jsonl`, its 36 answerable questions)
  over its own corpus (python3.11-doc tutorial + library pages, `fetch_pydocs`); a chunk is relevant when it
  comes from the question's `doc` and contains its `key` (`passage_correct`), so every such chunk in the store is
  a qrel.

For every query the product's `Retriever.search` (current fusion settings, no rerank) gives the fused candidates
once; each reranker then reorders the top N (10, 20, 30) through the product's own `Reranker.rerank`, the tail
keeping its fused order, exactly as `Retriever.search` does. Metrics are ranx's nDCG@10 and Recall@10 (plus a
paired randomization p-value against the fused order). Latency: `Reranker.rerank` over the real top-N
candidates of the first `--latency-queries` pyfaq queries, 1 torch thread (the product's `TORCH_THREADS`).

The gate (issue 5): a model ships as the default only if it improves nDCG@10 on every set at the default
candidate count (`rerank_candidates`) and its rerank p95 there is at most 300 ms on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.encoders import Embedder, get_bm25, get_embedder  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.types import Hit  # noqa: E402
from retrieval.eval.beir import DatasetUnavailable, load_beir  # noqa: E402
from retrieval.eval.harness import ScratchIndex, evaluate_run, paired_randomization, scratch_dir  # noqa: E402
from retrieval.rerank import Reranker  # noqa: E402
from retrieval.search import Retriever  # noqa: E402

log = logging.getLogger("benchmarks.rerank")

SHARED = ROOT.parent / "shared" / "data"
RUNS = ROOT / ".cache" / "reranker-runs"
SHIPPED = ROOT / "models" / "reranker"
DEPTH = 100  # fused chunks kept per query: the tail behind the reranked head, and room for Recall@100
P95_BUDGET_MS = 300.0
GATE_METRIC = "ndcg@10"


@dataclass
class EvalSet:
    """Queries, qrels and each query's fused candidates (hits), plus how hits map to judged ids."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[Hit]]
    to_ids: Callable[[Sequence[Hit]], list[str]]
    note: str = ""


@dataclass
class Variant:
    """One reranker configuration under test."""

    path: str
    max_length: int
    int8: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"{Path(self.path).name} @{self.max_length}{' int8' if self.int8 else ''}"

    def load(self) -> Reranker:
        """The product's `Reranker` over this model (int8: dynamic quantization of its Linear layers)."""
        rr = Reranker(self.path, max_length=self.max_length)
        if not rr.available:
            raise RuntimeError(rr.status)
        if self.int8:
            import torch

            ce = rr._model
            tm = ce.transformers_model  # type: ignore[attr-defined]
            q = torch.ao.quantization.quantize_dynamic(tm, {torch.nn.Linear}, dtype=torch.qint8)
            ce[0].model = q  # type: ignore[index]
        return rr


@dataclass
class Row:
    """Metrics of one (set, reranker, candidates) cell."""

    set: str
    reranker: str
    candidates: int | None
    metrics: dict[str, float]
    p_vs_fused: float | None = None
    per_query: list[float] = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------------------------------- sets
def _paths(hits: Sequence[Hit]) -> list[str]:
    return [h.path for h in hits]


def beir_set(path: Path, settings: Settings, embedder: Embedder, workdir: Path, stack: list[Any],
             split: str = "test", max_queries: int | None = None) -> EvalSet:
    """A BEIR dataset ingested by the harness's `ScratchIndex` (kept under `workdir` between runs)."""
    ds = load_beir(path, split=split, max_queries=max_queries)
    ctx = scratch_dir(workdir, ds.name)
    folder = ctx.__enter__()
    stack.append(ctx)
    index = ScratchIndex(ds, settings, embedder, folder).open(progress=True)
    stack.append(index)
    assert index.store is not None
    retriever = Retriever(index.settings, index.store, embedder, get_bm25(), reranker=Reranker(None))
    cands = {q: retriever.search(t, k=DEPTH, rerank=False, stage_scores=False).hits for q, t in ds.queries.items()}
    note = f"{len(ds.queries)} queries, {len(ds.corpus)} documents, {index.store.count()} chunks"
    return EvalSet(ds.name, dict(ds.queries), ds.qrels, cands, lambda hits: index.docs_of(_paths(hits)), note)


def pydocs_set(settings: Settings, embedder: Embedder, workdir: Path, stack: list[Any]) -> EvalSet:
    """The answer-quality questions over their own corpus; qrels = every stored chunk `passage_correct` accepts."""
    from benchmarks.answer_quality import bench_settings, build_index, fetch_pydocs, load_questions, passage_correct

    docs = fetch_pydocs(workdir / "pydocs")
    s = bench_settings(workdir / "pydocs", torch_threads=settings.torch_threads)
    backend = build_index(s, docs)
    stack.append(backend)
    store = backend.collection(s.collection, embedder.dim, {"embedding_model": embedder.model_id})
    chunks = [Hit.from_payload(r.id, r.payload) for r in store.scroll()]
    questions = [q for q in load_questions() if q.get("answerable") and q.get("doc")]
    queries = {q["id"]: q.get("standalone") or q["question"] for q in questions}
    qrels = {q["id"]: {h.id: 1 for h in chunks if passage_correct(h, q)} for q in questions}
    missing = [q for q, rel in qrels.items() if not rel]
    if missing:
        log.warning("no stored chunk satisfies %s; they are left out", missing)
    queries = {q: t for q, t in queries.items() if qrels[q]}
    qrels = {q: r for q, r in qrels.items() if r}
    retriever = Retriever(s, store, embedder, get_bm25(), reranker=Reranker(None))
    cands = {q: retriever.search(t, k=DEPTH, rerank=False, stage_scores=False).hits for q, t in queries.items()}
    note = f"{len(queries)} answerable questions, {len(chunks)} chunks, {sum(map(len, qrels.values()))} relevant"
    return EvalSet("pydocs (answer-quality)", queries, qrels, cands, lambda hits: [h.id for h in hits], note)


# --------------------------------------------------------------------------------------------------- scoring
def score_heads(rr: Reranker, es: EvalSet, n: int) -> dict[str, list[float]]:
    """Cross-encoder scores of each query's top `n` candidates (fresh copies: the shared hits stay untouched)."""
    out = {}
    for q, text in es.queries.items():
        head = [dataclasses.replace(h, scores={}) for h in es.candidates[q][:n]]
        by_id = {h.id: h for h in rr.rerank(text, head)}
        out[q] = [by_id[h.id].scores.get("rerank", 0.0) for h in head]
    return out


def reorder(hits: Sequence[Hit], scores: Sequence[float], n: int) -> list[Hit]:
    """Top `n` by score (stable), then the fused tail, as `Retriever.search` orders them."""
    head = sorted(range(min(n, len(hits))), key=lambda i: -scores[i])
    return [hits[i] for i in head] + list(hits[n:])


def evaluate(es: EvalSet, ranked: dict[str, list[Hit]]) -> tuple[dict[str, float], list[float]]:
    """ranx metrics of ranked hits mapped to judged ids."""
    return evaluate_run(es.qrels, {q: es.to_ids(h) for q, h in ranked.items()})


def latency(rr: Reranker, es: EvalSet, sizes: Sequence[int], queries: int, warmup: int = 3) -> dict[int, dict]:
    """p50/p95/mean ms of `Reranker.rerank` over the real top-N candidates of the first `queries` queries."""
    import gc

    items = list(es.queries.items())[:queries]
    out: dict[int, dict] = {}
    for n in sizes:
        for q, text in items[:warmup]:
            rr.rerank(text, [dataclasses.replace(h, scores={}) for h in es.candidates[q][:n]])
        samples = []
        gc.disable()  # a collection pause would land in p95 and measure Python, not the model
        try:
            for q, text in items:
                head = [dataclasses.replace(h, scores={}) for h in es.candidates[q][:n]]
                t = time.perf_counter()
                rr.rerank(text, head)
                samples.append(1000 * (time.perf_counter() - t))
        finally:
            gc.enable()
        out[n] = {"p50_ms": round(float(np.percentile(samples, 50)), 1),
                  "p95_ms": round(float(np.percentile(samples, 95)), 1),
                  "mean_ms": round(statistics.fmean(samples), 1), "n": len(samples)}
    return out


def default_models() -> list[str]:
    """Every trained run under `.cache/reranker-runs/`, and the shipped model if there is one."""
    found = sorted(str(p.parent) for p in RUNS.glob("*/model.safetensors"))
    if (SHIPPED / "model.safetensors").exists():
        found.append(str(SHIPPED))
    return found


# --------------------------------------------------------------------------------------------------- report
def print_tables(rows: Sequence[Row], lat: dict[str, dict[int, dict]], gate: dict[str, dict], sets: Sequence[EvalSet],
                 default_n: int) -> None:
    """Quality per set, latency per variant, and the gate verdicts."""
    for es in sets:
        print(f"\n{es.name}: {es.note}")
        print(f"{'reranker':<34} {'cands':>5} {'nDCG@10':>8} {'R@10':>6} {'MRR@10':>7} {'p vs fused':>10}")
        for r in (r for r in rows if r.set == es.name):
            p = "" if r.p_vs_fused is None else f"{r.p_vs_fused:.3f}"
            c = "—" if r.candidates is None else str(r.candidates)
            print(f"{r.reranker:<34} {c:>5} {r.metrics['ndcg@10']:>8.3f} {r.metrics['recall@10']:>6.3f} "
                  f"{r.metrics['mrr@10']:>7.3f} {p:>10}")
    if lat:
        sizes = sorted(next(iter(lat.values())))
        print("\nrerank latency, ms p50 / p95 (1 torch thread)")
        print(f"{'reranker':<34} " + " ".join(f"{'top ' + str(n):>15}" for n in sizes))
        for name, by_n in lat.items():
            print(f"{name:<34} " + " ".join(f"{by_n[n]['p50_ms']:>7.0f} /{by_n[n]['p95_ms']:>6.0f}" for n in sizes))
    print(f"\ngate at {default_n} candidates: nDCG@10 up on every set, p95 ≤ {P95_BUDGET_MS:.0f} ms")
    for name, g in gate.items():  # latency-only variants have no gate entry
        deltas = ", ".join(f"{k} {v:+.3f}" for k, v in g["ndcg_delta"].items())
        print(f"{'PASS' if g['pass'] else 'fail':<5} {name:<34} {deltas}; p95 {g['p95_ms']:.0f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit 0 whatever the verdict (the verdict is data, not an error)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="CrossEncoder folder (repeatable); default: every trained run")
    ap.add_argument("--max-length", type=int, nargs="+", default=[256], help="inference max lengths to try")
    ap.add_argument("--int8", action="store_true", help="also try each variant with int8 dynamic quantization")
    ap.add_argument("--latency-only", action="append", default=[],
                    help="CrossEncoder folder timed but not scored (e.g. an untrained 6-layer stand-in); repeatable")
    ap.add_argument("--candidates", type=int, nargs="+", default=[10, 20, 30])
    ap.add_argument("--latency-queries", type=int, default=50)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "second-brain" / "rerank-eval",
                    help="scratch stores, kept between runs (outside the repository)")
    ap.add_argument("--max-queries", type=int, default=None, help="first N queries of each BEIR set (smoke runs)")
    ap.add_argument("--skip-pydocs", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerank.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    settings = Settings(_env_file=None)
    torch.set_num_threads(settings.torch_threads or 1)
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    default_n = settings.rerank_candidates
    sizes = sorted(set(args.candidates) | {default_n})
    variants = [Variant(m, ml, q) for m in (args.model or default_models()) for ml in args.max_length
                for q in ((False, True) if args.int8 else (False,))]
    stack: list[Any] = []
    sets: list[EvalSet] = []
    skipped: dict[str, str] = {}
    load = os.getloadavg()
    try:
        for name in ("pyfaq", "scifact"):
            try:
                sets.append(beir_set(SHARED / name, settings, embedder, args.workdir, stack,
                                     max_queries=args.max_queries))
            except DatasetUnavailable as exc:
                skipped[name] = str(exc)
                print(f"{name}: skipped ({exc})")
        if not args.skip_pydocs:
            sets.append(pydocs_set(settings, embedder, args.workdir, stack))

        rows: list[Row] = []
        fused_pq: dict[str, list[float]] = {}
        for es in sets:
            m, pq = evaluate(es, es.candidates)
            fused_pq[es.name] = pq
            rows.append(Row(es.name, "none (fused order)", None, m, None, pq))
        lat: dict[str, dict[int, dict]] = {}
        gate: dict[str, dict] = {}
        for v in variants:
            started = time.perf_counter()
            rr = v.load()
            deltas: dict[str, float] = {}
            for es in sets:
                scores = score_heads(rr, es, max(sizes))
                base = next(r for r in rows if r.set == es.name and r.candidates is None)
                for n in sizes:
                    ranked = {q: reorder(es.candidates[q], scores[q], n) for q in es.queries}
                    m, pq = evaluate(es, ranked)
                    rows.append(Row(es.name, v.label, n, m, paired_randomization(pq, fused_pq[es.name]), pq))
                    if n == default_n:
                        deltas[es.name] = round(m[GATE_METRIC] - base.metrics[GATE_METRIC], 4)
            lat[v.label] = latency(rr, sets[0], sizes, args.latency_queries) if sets else {}
            p95 = lat[v.label].get(default_n, {}).get("p95_ms", float("inf"))
            gate[v.label] = {"path": v.path, "max_length": v.max_length, "int8": v.int8, "ndcg_delta": deltas,
                             "p95_ms": p95, "pass": bool(deltas) and all(d > 0 for d in deltas.values())
                             and p95 <= P95_BUDGET_MS, "seconds": round(time.perf_counter() - started, 1)}
            print(f"{v.label}: {gate[v.label]}", flush=True)
        for path in args.latency_only:
            for ml in args.max_length:
                v = Variant(path, ml, label=f"{Path(path).name} @{ml} (latency only)")
                lat[v.label] = latency(v.load(), sets[0], sizes, args.latency_queries) if sets else {}
                print(f"{v.label}: {lat[v.label]}", flush=True)
    finally:
        for obj in reversed(stack):
            if hasattr(obj, "close"):
                obj.close()
            elif hasattr(obj, "__exit__"):
                obj.__exit__(None, None, None)

    print_tables(rows, lat, gate, sets, default_n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": {"created": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                        "python": platform.python_version(), "torch_threads": settings.torch_threads or 1,
                        "loadavg_at_start": [round(x, 2) for x in load], "embedding_model": embedder.model_id},
        "settings": {"fusion": settings.fusion, "dense_weight": settings.dense_weight,
                     "bm25_weight": settings.bm25_weight, "rrf_k": settings.rrf_k, "prefetch_k": settings.prefetch_k,
                     "rerank_candidates": default_n},
        "sets": {es.name: es.note for es in sets}, "skipped": skipped,
        "rows": [{k: v for k, v in dataclasses.asdict(r).items() if k != "per_query"} for r in rows],
        "latency": lat, "gate": gate, "p95_budget_ms": P95_BUDGET_MS,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
