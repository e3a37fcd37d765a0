"""The evaluation harness end to end on a tiny BEIR-format dataset written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from core.settings import Settings
from retrieval.eval.baseline import RankBm25Index, weighted_rrf
from retrieval.eval.beir import DatasetUnavailable, load_beir
from retrieval.eval.harness import METRICS, main, run

FILLER = ("The committee met on Tuesday and reviewed the minutes, the budget and the travel plans. "
          "Nothing else of note was discussed, and the meeting closed after an hour. ") * 6

DOCS = {
    "tomato": ("Growing tomatoes", "Tomato plants need at least six hours of direct sun and deep watering twice a "
                                   "week; pinch out the side shoots as the plant grows."),
    "sourdough": ("Sourdough", "Feed the sourdough starter twelve hours before baking, then bake the loaf at 230 "
                               "degrees Celsius for forty minutes."),
    "bicycle": ("Bicycle care", "Clean and lubricate the bicycle chain every 300 kilometres; a dry chain wears the "
                                "cassette and chainrings quickly."),
    # a long document: its answer sits after enough filler that it lands in a later chunk
    "python-gil": ("Meeting notes", FILLER + "The global interpreter lock (GIL) in CPython lets only one thread "
                                             "execute Python bytecode at a time, so CPU-bound threads do not run in "
                                             "parallel."),
    "vat": ("Invoices", "Invoices to customers in the EU must show the VAT identification number of both parties."),
    # two documents with identical text are stored once by the pipeline; both must still be scorable
    "twin-a": ("Copy A", "The lighthouse keeper logs the fog horn signals in the brass-bound ledger every night."),
    "twin-b": ("Copy B", "The lighthouse keeper logs the fog horn signals in the brass-bound ledger every night."),
}
DISTRACTORS = [
    "Quarterly sales grew in the northern region while the southern region stayed flat.",
    "The museum opens at nine and closes at five, except on public holidays.",
    "Jazz musicians often improvise over the chord changes of well-known standards.",
    "The annual rainfall in the valley is about 600 millimetres, mostly in winter.",
    "Chess openings such as the Sicilian Defence lead to sharp, tactical positions.",
    "A healthy adult needs roughly seven to nine hours of sleep per night.",
    "The train to the coast leaves every half hour from platform four.",
    "Mountain goats climb steep cliffs to lick minerals from the rock face.",
    "Origami cranes are folded from a single square sheet of paper.",
    "The library lends e-books for three weeks and renews them once.",
    "Volcanic soil is rich in minerals and good for vineyards.",
    "Knitting a scarf takes about two balls of chunky wool.",
    "The telescope's mirror must be cooled before observing planets.",
]
QUERIES = {
    "q1": ("how much sun do tomato plants need", "tomato"),
    "q2": ("sourdough baking temperature", "sourdough"),
    "q3": ("how often should I oil my bike chain", "bicycle"),
    "q4": ("why don't Python threads run in parallel (GIL)?", "python-gil"),
    "q5": ("where does the lighthouse keeper record fog horn signals", "twin-b"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """These tests embed many short queries: one intra-op thread (see conftest)."""


def write_beir(root: Path, with_corpus: bool = True) -> Path:
    """A 20-document, 5-query BEIR folder."""
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()]
    docs += [{"_id": f"noise-{i}", "title": "", "text": x} for i, x in enumerate(DISTRACTORS)]
    assert len(docs) == 20
    if with_corpus:
        (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, (t, _) in QUERIES.items()))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    """Small chunks so that the long document is split and hits must be mapped back to their document."""
    return settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap": 0.15})


def test_harness_end_to_end(tmp_path: Path, small_settings: Settings, embedder) -> None:
    ds = write_beir(tmp_path / "tiny")
    missing = write_beir(tmp_path / "notyet", with_corpus=False)
    out = tmp_path / "eval.json"
    console = Console(record=True, width=200)
    reports = run([ds, missing], out=out, depth=60, settings=small_settings, embedder=embedder, console=console,
                  progress=False)

    ok, skipped = reports
    assert skipped.status == "skipped" and "corpus.jsonl" in skipped.reason
    assert ok.status == "ok" and ok.queries == 5 and ok.documents == 20
    assert ok.chunks > 19  # twins share points, the long document adds several chunks
    methods = [r.method for r in ok.rows]
    assert methods[:11] == ["bm25", "dense", "hybrid rrf 1:1", "hybrid rrf 2:1", "hybrid rrf 3:1", "hybrid rrf 4:1",
                            "hybrid dbsf", "client wRRF 1:1", "client wRRF 2:1", "client wRRF 3:1", "client wRRF 4:1"]
    product = methods[11]  # named after the configured fusion, e.g. "search() rrf 3:1 k=60"
    assert product.startswith(f"search() {small_settings.fusion}")
    assert methods[12:] == [f"{product} + rerank", "rank-bm25 (text.split)", "rank-bm25 + dense (Ensemble)"]
    rerank = next(r for r in ok.rows if r.group == "rerank")
    assert rerank.metrics is None and rerank.note.startswith("skipped: unavailable:")
    for r in ok.rows:
        if r.metrics is None:
            continue
        assert set(r.metrics) == set(METRICS)
        assert all(0.0 <= v <= 1.0 for v in r.metrics.values()), r
        assert r.metrics["recall@100"] >= r.metrics["recall@10"]
    # every query is answerable on meaning: dense and the fused rows find each one in the top 10
    for name in ("dense", "hybrid rrf 3:1", product):
        row = next(r for r in ok.rows if r.method == name)
        assert row.per_query and all(v > 0 for v in row.per_query["ndcg@10"]), (name, row.per_query)
        assert row.metrics and row.metrics["recall@10"] == 1.0

    text = console.export_text()
    assert "tiny: 5 queries, 20 documents" in text and "skipped notyet" in text
    data = json.loads(out.read_text())
    assert [d["status"] for d in data["datasets"]] == ["ok", "skipped"]
    assert {r["method"] for r in data["datasets"][0]["rows"]} == set(methods)


def test_cli_reuses_a_kept_store_and_sweeps_the_grid(tmp_path: Path, small_settings: Settings, embedder,
                                                      monkeypatch) -> None:
    ds = write_beir(tmp_path / "tiny")
    monkeypatch.setattr("retrieval.eval.harness.get_settings", lambda: small_settings)
    monkeypatch.setattr("retrieval.eval.harness.get_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr("retrieval.eval.harness.fusion_grid", lambda depth: _small_grid(depth))
    work, out = tmp_path / "work", tmp_path / "eval.json"
    args = ["--dataset", str(ds), "--out", str(out), "--workdir", str(work), "--depth", "60", "--quiet"]
    assert main(args) == 0
    assert main([*args, "--fusion-grid"]) == 0
    report = json.loads(out.read_text())["datasets"][0]
    assert report["reused_store"] is True
    assert len(report["grid"]) == 2 and report["selection"]["cv_ndcg@10"] <= 1.0
    assert 0.0 <= report["selection"]["p_best_vs_dense"] <= 1.0
    assert main(["--dataset", str(tmp_path / "absent"), "--out", str(out), "--quiet"]) == 1


def _small_grid(depth: int):
    from retrieval.eval.harness import FusionConfig

    return [FusionConfig("rrf", 3.0, 1.0, 60, 50), FusionConfig("dbsf", 1.0, 1.0, 60, depth)]


def test_beir_loader_reports_a_half_written_corpus(tmp_path: Path) -> None:
    ds = write_beir(tmp_path / "tiny")
    (ds / "corpus.jsonl").write_text((ds / "corpus.jsonl").read_text() + '{"_id": "cut", "te')
    with pytest.raises(DatasetUnavailable, match="still being written"):
        load_beir(ds)


def test_baseline_follows_langchain_defaults() -> None:
    index = RankBm25Index(["a", "b", "c"], ["Tomato sun water", "bread oven heat", "tomato soup"])
    # text.split() does not lower-case: "Tomato" and "tomato" are different tokens, as in BM25Retriever
    assert [i for i, _ in index.search("tomato", 1)] == ["c"]
    fused = weighted_rrf([["a", "b"], ["b", "c"]], (0.5, 0.5), 60)
    assert [i for i, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(0.5 / 62 + 0.5 / 61)
