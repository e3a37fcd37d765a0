"""Hybrid retrieval over a tiny real corpus, on both backends; reranker mechanics with a real CrossEncoder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.encoders import get_bm25
from core.models import resolve_embedding_model
from core.settings import Settings
from core.types import Hit
from ingest.pipeline import Ingestor
from retrieval.filters import SearchFilters
from retrieval.rerank import Reranker
from retrieval.search import Retriever, drop_overlaps
from store.base import Filter
from store.factory import Backend

LIGHTHOUSE = "\n\n".join([
    "# The Rock Lighthouse",
    "The lighthouse on the rock was built in 1848 from granite quarried on the mainland and shipped out on barges.",
    "Its first lamp burned colza oil and was visible for eighteen nautical miles on a clear night.",
    "In 1902 the keepers switched to paraffin vapour burners, which doubled the brightness of the light.",
    "The fog signal was a compressed-air siren driven by two oil engines in the engine room at the base.",
    "The keepers logged every fog horn signal in a brass-bound ledger that is now kept in the county archive.",
    "Automation came in 1983, when the last three keepers left and the light was monitored by radio from shore.",
    "Today the tower is painted in red and white bands and the lantern holds a rotating LED optic.",
])
NOTES = {
    "notes/garden.md": "# Garden\n\nTomatoes need six hours of direct sun a day.\n\n## Watering\n\n"
                       "Water the tomato beds deeply twice a week, in the early morning.",
    "notes/bikes.txt": "My bicycle has a Shimano 105 groupset and 28 mm tyres.\n\nI service the bike every spring "
                       "and oil the chain every 300 kilometres.",
    "work/report.html": "<html><head><title>Quarterly report</title></head><body><h1>Revenue</h1>"
                        "<p>Revenue grew twelve percent in the third quarter, led by the northern region.</p>"
                        "</body></html>",
    "work/history.md": LIGHTHOUSE,
}
OLD = datetime(2020, 1, 1).timestamp()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """These tests embed many short queries: one intra-op thread (see conftest)."""


class Library:
    """A tiny ingested library and a retriever over it."""

    def __init__(self, settings: Settings, ingestor: Ingestor, inbox: Path) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.inbox = inbox
        self.store = ingestor.store

    def retriever(self, reranker: Reranker | None = None, **overrides: object) -> Retriever:
        s = self.settings.model_copy(update=overrides)
        return Retriever(s, self.store, self.ingestor.embedder, get_bm25(), reranker=reranker or Reranker(None))

    def doc_id(self, name: str) -> str:
        row = self.ingestor.manifest.get(str(self.inbox / name))
        assert row and row.doc_id
        return row.doc_id


@pytest.fixture(scope="module", params=["edge", "server"])
def library(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Library]:
    """The corpus ingested once per backend; small overlapping chunks so that the long note is split."""
    tmp = tmp_path_factory.mktemp(f"lib-{request.param}")
    settings = Settings(_env_file=None, data_dir=tmp / "data", chunk_tokens=40, chunk_overlap=0.3,
                        cache_dir=Path.home() / ".cache" / "second-brain")
    inbox = tmp / "data" / "inbox"
    for name, text in NOTES.items():
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_text(text, encoding="utf-8")
    backend = Backend(root=settings.qdrant_path) if request.param == "edge" else Backend(url=":memory:")
    ingestor = Ingestor(settings, backend, embedder=embedder)
    results = ingestor.sync([inbox])
    assert sorted(r.outcome for r in results) == ["ingested"] * len(NOTES), results
    lib = Library(settings, ingestor, inbox.resolve())
    # the garden note pretends to be old, so that date filters have something to separate
    ingestor.store.set_payload(Filter.eq("doc_id", lib.doc_id("notes/garden.md")), {"ingested_at": OLD})
    yield lib
    ingestor.manifest.close()
    backend.close()


def _names(hits: list[Hit]) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_hybrid_search_ranks_the_answer_first_with_stage_scores(library: Library) -> None:
    result = library.retriever().search("how often should I water the tomatoes", k=3, rerank=False)
    top = result.hits[0]
    assert top.path.endswith("garden.md") and top.heading_path == ("Garden", "Watering")
    assert {"fused", "dense", "bm25", "dense_rank", "bm25_rank"} <= set(top.scores)
    assert top.scores["dense_rank"] == 1.0 and top.score == top.scores["fused"]
    assert top.end > top.start and "Water the tomato beds" in top.text
    assert set(result.timings) == {"encode", "search"} and result.reranker_status == ""
    # without stage scores only the fused request runs
    lean = library.retriever().search("how often should I water the tomatoes", k=3, rerank=False, stage_scores=False)
    assert [h.id for h in lean.hits] == [h.id for h in result.hits] and "dense" not in lean.hits[0].scores


@pytest.mark.parametrize(("weights", "rrf_k"), [((4.0, 1.0), 2), ((3.0, 1.0), 60), ((1.0, 0.25), 10)])
def test_weighted_rrf_follows_qdrants_formula(library: Library, weights: tuple[float, float], rrf_k: int) -> None:
    """Qdrant's weighted RRF is Σ 1 / (rank / w + k − 1), not the textbook Σ w / (k + rank).

    The fusion defaults were tuned on that formula (docs/benchmarks.md); an engine upgrade that changes it
    must fail here rather than silently change ranking quality.
    """
    r = library.retriever(dense_weight=weights[0], bm25_weight=weights[1], rrf_k=rrf_k)
    hits = r.search("tomato watering twice a week", k=50, rerank=False).hits  # deep enough to see every chunk
    assert any("bm25_rank" in h.scores for h in hits)
    branches = {"dense": weights[0], "bm25": weights[1]}
    for h in hits:
        ranks = {b: h.scores[f"{b}_rank"] for b in branches if f"{b}_rank" in h.scores}
        expected = sum(1.0 / (rank / branches[b] + rrf_k - 1) for b, rank in ranks.items())
        assert h.scores["fused"] == pytest.approx(expected, rel=1e-4), h.scores


def test_exact_terms_reach_the_top_through_bm25(library: Library) -> None:
    hits = library.retriever().branch("Shimano 105", "bm25", k=3)
    assert _names(hits)[0] == "bikes.txt" and hits[0].scores["bm25"] > 0
    assert library.retriever().branch("the of and", "bm25", k=3) == []  # stop words only: no terms, no error


@pytest.mark.parametrize(
    ("filters", "allowed"),
    [
        (SearchFilters(folder="FOLDER/work"), {"report.html", "history.md"}),
        (SearchFilters(file_types=("md",)), {"garden.md", "history.md"}),
        (SearchFilters(file_types=("html", "txt")), {"report.html", "bikes.txt"}),
        (SearchFilters(ingested_before=datetime(2021, 1, 1)), {"garden.md"}),
        (SearchFilters(ingested_after=datetime(2021, 1, 1), folder="FOLDER/notes"), {"bikes.txt"}),
    ],
)
def test_filters_by_folder_type_and_date(library: Library, filters: SearchFilters, allowed: set[str]) -> None:
    if filters.folder:
        filters = SearchFilters(**{**filters.__dict__, "folder": filters.folder.replace("FOLDER", str(library.inbox))})
    for query in ("tomatoes and watering", "revenue growth", "lighthouse fog signal", "bicycle chain"):
        hits = library.retriever().search(query, filters=filters, k=10, rerank=False).hits
        assert hits and set(_names(hits)) <= allowed, (query, _names(hits))


def test_overlapping_chunks_are_not_returned_twice(library: Library) -> None:
    query = "keepers paraffin vapour burners fog signal siren oil engines"
    raw = library.retriever().branch(query, "dense", k=20)
    history = [h for h in raw if h.path.endswith("history.md")]
    overlapping = any(a.start < b.end and b.start < a.end for i, a in enumerate(history) for b in history[i + 1 :])
    assert len(history) >= 3 and overlapping, "the long note must be chunked with overlap for this test to mean much"
    hits = library.retriever().search(query, k=20, rerank=False).hits
    spans = [(h.start, h.end) for h in hits if h.path.endswith("history.md")]
    assert spans and all(a[1] <= b[0] or b[1] <= a[0] for i, a in enumerate(spans) for b in spans[i + 1 :])
    assert drop_overlaps(raw) == [h for h in raw if h in drop_overlaps(raw)]  # order kept


def test_multi_query_fusion_merges_the_lists(library: Library) -> None:
    r = library.retriever()
    fused = r.search(["tomato watering schedule", "bicycle groupset", "  "], k=4, rerank=False)
    assert fused.queries == ["tomato watering schedule", "bicycle groupset"]
    assert {"garden.md", "bikes.txt"} <= set(_names(fused.hits[:2]))
    # the fused score is RRF over the two lists, so it is at most 2 / (rrf_k + 1)
    assert all(0 < h.scores["fused"] <= 2 / (r.settings.rrf_k + 1) for h in fused.hits)
    assert fused.hits == sorted(fused.hits, key=lambda h: -h.scores["fused"])


def test_neighbour_expansion_attaches_adjacent_chunks(library: Library) -> None:
    r = library.retriever(neighbour_expansion=True)
    hits = r.search("fog signal compressed-air siren engine room", k=1, rerank=False).hits
    hit = hits[0]
    assert hit.path.endswith("history.md") and hit.chunk_index > 0
    chunks = {c.payload["chunk_index"]: c.payload["text"]
              for c in library.store.scroll(Filter.eq("doc_id", hit.doc_id))}
    assert hit.payload["context_before"] == chunks[hit.chunk_index - 1]
    if hit.chunk_index + 1 in chunks:
        assert hit.payload["context_after"] == chunks[hit.chunk_index + 1]
    # two hits that share a neighbour (chunks 0 and 2 both border chunk 1) both get it
    doc = library.doc_id("work/history.md")
    pair = [Hit(id=f"x{i}", doc_id=doc, chunk_index=i, text="", path="", title="", file_type="", start=0, end=0)
            for i in (0, 2)]
    r.expand(pair)
    assert pair[0].payload["context_after"] == chunks[1] == pair[1].payload["context_before"]
    assert "context_before" not in pair[0].payload


# ------------------------------------------------------------------------------------------ reranker
@pytest.fixture(scope="module")
def cross_encoder():
    """A real CrossEncoder from the packaged MiniLM weights; its 1-label head is untrained (plumbing only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import CrossEncoder

    return CrossEncoder(resolve_embedding_model("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=32,
                        device="cpu")


def _hits(texts: list[str]) -> list[Hit]:
    return [Hit(id=str(i), doc_id="d", chunk_index=i, text=t, path="/p", title="", file_type="text", start=0, end=0)
            for i, t in enumerate(texts)]


def test_reranker_batches_truncates_and_orders_by_score(cross_encoder) -> None:
    texts = [f"passage number {i} about {'tomatoes' if i % 2 else 'bicycles'} " + "filler words " * 40
             for i in range(7)]
    batches: list[tuple[int, int]] = []
    hook = cross_encoder[0].register_forward_hook(
        lambda _m, args, _out: batches.append(tuple(args[0]["input_ids"].shape)))
    try:
        ranked = Reranker.from_model(cross_encoder, batch_size=3).rerank("tomatoes", _hits(texts))
    finally:
        hook.remove()
    assert [b[0] for b in batches] == [3, 3, 1]  # 7 pairs in batches of 3
    assert all(b[1] <= 32 for b in batches)  # every pair truncated to max_length tokens
    scores = [h.scores["rerank"] for h in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    direct = cross_encoder.predict([("tomatoes", t) for t in texts])
    assert {h.id: h.scores["rerank"] for h in ranked} == pytest.approx({str(i): float(s) for i, s in enumerate(direct)})
    # what lies beyond max_length cannot change a score: the model never sees it
    short, long = _hits([texts[0], texts[0] + " a completely different ending about sourdough bread"])
    Reranker.from_model(cross_encoder).rerank("tomatoes", [short, long])
    assert short.scores["rerank"] == pytest.approx(long.scores["rerank"])
    assert Reranker.from_model(cross_encoder).rerank("q", []) == []
    assert len(Reranker.from_model(cross_encoder).rerank("tomatoes", _hits(texts), top_k=2)) == 2


def test_reranker_falls_back_to_the_fused_order_when_the_model_is_missing(tmp_path: Path) -> None:
    rr = Reranker(str(tmp_path / "no-such-model"))
    hits = _hits(["a", "b", "c"])
    assert rr.rerank("q", hits) == hits and all("rerank" not in h.scores for h in hits)
    assert not rr.available and rr.status.startswith("unavailable: cannot load")
    assert Reranker(None).status == "unavailable: no reranker model configured (RERANKER_MODEL)"


def test_search_reranks_the_head_and_keeps_the_tail(library: Library, cross_encoder, tmp_path: Path) -> None:
    r = library.retriever(reranker=Reranker.from_model(cross_encoder, name="minilm-untrained"), rerank_candidates=3)
    result = r.search("lighthouse keepers", k=6, rerank=True)
    assert result.reranker_status == "active: minilm-untrained" and "rerank" in result.timings
    head, tail = result.hits[:3], result.hits[3:]
    assert all("rerank" in h.scores for h in head) and all("rerank" not in h.scores for h in tail)
    assert [h.scores["rerank"] for h in head] == sorted((h.scores["rerank"] for h in head), reverse=True)
    assert len(result.hits) == min(6, result.candidates)
    missing = library.retriever(reranker=Reranker(str(tmp_path / "absent"))).search("lighthouse", k=3, rerank=True)
    assert missing.reranker_status.startswith("unavailable:") and missing.hits
    assert all("rerank" not in h.scores for h in missing.hits)


# ------------------------------------------------------------------------------------------ CLI
def test_brain_search_cli_prints_hits_with_stage_scores(library: Library, monkeypatch) -> None:
    from brain import search_cmds

    monkeypatch.setattr(search_cmds, "get_settings", lambda: library.settings.model_copy(update={"rerank": False}))
    monkeypatch.setattr(search_cmds, "backend_or_exit", _borrowed(library.ingestor.backend))
    monkeypatch.setattr(search_cmds, "get_embedder", lambda *a, **k: library.ingestor.embedder)
    app = typer.Typer()
    app.callback()(lambda: None)
    search_cmds.register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["search", "water the tomatoes", "--json", "--k", "2", "--type", "md"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["hits"][0]["path"].endswith("garden.md") and len(data["hits"]) <= 2
    assert {"fused", "dense", "bm25"} <= set(data["hits"][0]["scores"])
    table = runner.invoke(app, ["search", "lighthouse fog", "--folder", str(library.inbox / "work"), "--no-rerank"])
    assert table.exit_code == 0 and "history.md" in table.output and "dense" in table.output
    none = runner.invoke(app, ["search", "tomatoes", "--type", "pdf"])
    assert none.exit_code == 1 and "no matching passages" in none.output


def _borrowed(backend: Backend):
    """A stand-in for `backend_or_exit` that lends the fixture's backend without closing it."""
    from contextlib import contextmanager

    @contextmanager
    def lend(_settings: Settings | None = None) -> Iterator[Backend]:
        yield backend

    return lend
