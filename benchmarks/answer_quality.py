"""Answer quality on real documents: Debian's python3.11-doc (tutorial + a dozen library pages).

For each question of `benchmarks/questions/pydocs.jsonl` (36 answerable with an expected document and a key
phrase, 10 the docs do not answer), the full answer graph runs with the real packaged LLM, and we count:

- cited_correct: answerable questions whose citations include a passage of the expected document that
  contains the key phrase (the claim is checkable where it is cited);
- first_cited_correct: the same for citation [1] alone;
- retrieved_correct: a passage given to the model was correct (the ceiling for cited_correct);
- key_in_answer: the key phrase appears in the answer text;
- declined_unanswerable / declined_answerable: how often the reply was "My notes don't cover that.".

`--calibrate` runs retrieval only (no LLM) and sweeps the answerability floor (`ANSWER_FLOOR`) over the
relevance score; it prints the floor that best separates answerable from unanswerable questions.

    python -m benchmarks.answer_quality --calibrate
    python -m benchmarks.answer_quality --variant fast
    python -m benchmarks.answer_quality --variant default --out benchmarks/results/answer_quality-default.json

The documents are fetched here (`apt-get download python3.11-doc`), never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.settings import Settings  # noqa: E402
from core.types import Hit  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "questions" / "pydocs.jsonl"
WORKDIR = ROOT / "data" / "bench" / "pydocs"
DOCS_SUBDIR = "usr/share/doc/python3.11/html/_sources"
LIBRARY_PAGES = ("json", "pathlib", "os.path", "venv", "csv", "random", "glob", "tempfile", "math", "functools",
                 "dataclasses", "timeit", "shutil")


# ---------------------------------------------------------------------------------------------- corpus
def fetch_pydocs(dest: Path) -> Path:
    """The corpus subset under `dest/docs` (tutorial/*.rst.txt + LIBRARY_PAGES), downloaded once."""
    docs = dest / "docs"
    marker = docs / ".complete"
    if marker.exists():
        return docs
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("python3.11-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        src = Path(tmp) / "x" / DOCS_SUBDIR
        shutil.rmtree(docs, ignore_errors=True)
        (docs / "tutorial").mkdir(parents=True)
        (docs / "library").mkdir(parents=True)
        for f in sorted((src / "tutorial").glob("*.rst.txt")):
            shutil.copy2(f, docs / "tutorial" / f.name)
        for page in LIBRARY_PAGES:
            shutil.copy2(src / "library" / f"{page}.rst.txt", docs / "library" / f"{page}.rst.txt")
    marker.write_text("ok\n")
    return docs


def bench_settings(workdir: Path = WORKDIR, **overrides: Any) -> Settings:
    """Settings whose stores live under the benchmark's own data directory."""
    data = workdir / "data"
    (data / "inbox").mkdir(parents=True, exist_ok=True)
    return Settings(_env_file=None, data_dir=data, **overrides)


def set_option(settings: Settings, name: str, value: Any) -> None:
    """Set an answer option on `settings`, whether or not `core.settings` declares it yet (the nodes read
    such options with `getattr(settings, name, default)`)."""
    object.__setattr__(settings, name, value)


def build_index(settings: Settings, docs: Path) -> Any:
    """Open the benchmark's embedded store and ingest the corpus (unchanged files are skipped)."""
    from ingest.pipeline import Ingestor
    from store.factory import open_backend

    backend = open_backend(settings)
    started = time.perf_counter()
    results = Ingestor(settings, backend).sync([docs])
    done = [r for r in results if r.outcome == "ingested"]
    if done:
        print(f"ingested {len(done)} files, {sum(r.chunks for r in done)} chunks in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return backend


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    """The question set (one JSON object per line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- scoring
def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def passage_correct(hit: Hit, q: dict[str, Any]) -> bool:
    """Whether `hit` is from the expected document and contains the key phrase."""
    return hit.path.replace("\\", "/").endswith(q["doc"]) and _norm(q["key"]) in _norm(hit.text)


def score(q: dict[str, Any], answer: Any) -> dict[str, Any]:
    """Per-question measures for one answer."""
    passages: list[Hit] = [c.hit for c in answer.citations]
    given = answer.steps.get("assess", {}).get("passages", [])
    row: dict[str, Any] = {
        "id": q["id"], "answerable": q["answerable"], "covered": answer.covered, "answer": answer.text,
        "rewritten": answer.rewritten_query, "relevance": answer.steps.get("answerability", {}).get("score"),
        "citations": [f"{Path(c.hit.path).parent.name}/{Path(c.hit.path).name}" for c in answer.citations],
        "flagged": answer.flagged, "unsupported": answer.unsupported,
        "draft": (answer.steps.get("generate") or {}).get("draft"),
        "sentences": (answer.steps.get("check_citations") or {}).get("sentences"),
        "passages": [f"{Path(g['path']).parent.name}/{Path(g['path']).name}"
                     for g in answer.steps.get("assess", {}).get("passages", [])],
        "passage_ids": [g["id"] for g in answer.steps.get("assess", {}).get("passages", [])],
    }
    if q["answerable"]:
        row["cited_correct"] = any(passage_correct(h, q) for h in passages)
        row["first_cited_correct"] = bool(passages) and passage_correct(passages[0], q)
        row["key_in_answer"] = _norm(q["key"]) in _norm(answer.text)
        row["retrieved_correct"] = any(g["path"].endswith(q["doc"]) for g in given)
    gen = answer.steps.get("generate") or {}
    row.update(ttft=gen.get("ttft"), generate_s=gen.get("total"), tokens=gen.get("tokens"),
               tokens_per_s=gen.get("tokens_per_s"), total_s=answer.steps.get("total"))
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Shares over the answerable and unanswerable questions."""
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]

    def share(rs: Sequence[dict[str, Any]], key: str, want: bool = True) -> float:
        return round(sum(1 for r in rs if bool(r.get(key)) == want) / len(rs), 3) if rs else 0.0

    return {
        "answerable": len(ans), "unanswerable": len(una),
        "cited_correct": share(ans, "cited_correct"),
        "first_cited_correct": share(ans, "first_cited_correct"),
        "retrieved_correct": share(ans, "retrieved_correct"),
        "key_in_answer": share(ans, "key_in_answer"),
        "declined_answerable": share(ans, "covered", want=False),
        "declined_unanswerable": share(una, "covered", want=False),
        "answers_with_unsupported_sentences": share([r for r in ans if r["covered"]], "unsupported"),
        "answers_with_flagged_citations": share([r for r in ans if r["covered"]], "flagged"),
    }


# ---------------------------------------------------------------------------------------------- calibration
def calibrate(settings: Settings, backend: Any, questions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Retrieval only: the relevance score per question and the floor that best separates the two kinds."""
    from core.encoders import get_bm25, get_embedder
    from graphs.nodes.answerability import relevance
    from retrieval.search import Retriever

    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    store = backend.collection(settings.collection, embedder.dim, {"embedding_model": embedder.model_id})
    retriever = Retriever(settings, store, embedder, get_bm25())
    scored = []
    for q in questions:
        query = q.get("standalone") or q["question"]
        hits = retriever.search(query, k=settings.retrieval_k, rerank=False).hits
        signal = relevance(query, hits)
        scored.append({"id": q["id"], "answerable": q["answerable"], "score": round(signal["score"], 4),
                       "dense": round(signal["dense"], 4), "coverage": round(signal["coverage"], 3),
                       "top": hits[0].path.rsplit("/", 2)[-2:] if hits else None,
                       "retrieved_correct": q["answerable"] and any(passage_correct(h, q) for h in hits[:4])})
    ans = sorted(r["score"] for r in scored if r["answerable"])
    una = sorted(r["score"] for r in scored if not r["answerable"])
    sweep = []
    for floor in sorted({round(x / 100, 2) for x in range(10, 91)}):
        tpr = sum(s >= floor for s in ans) / len(ans)
        tnr = sum(s < floor for s in una) / len(una)
        sweep.append({"floor": floor, "answerable_kept": round(tpr, 3), "unanswerable_declined": round(tnr, 3),
                      "balanced": round((tpr + tnr) / 2, 3)})
    # Keep every answerable question if possible (a wrong "not covered" is the worse error: an unanswerable one
    # that slips through still meets the attribution check), then decline as many unanswerable ones as possible;
    # take the middle of that plateau so small score shifts do not flip decisions.
    best = max(sweep, key=lambda r: (r["answerable_kept"], r["unanswerable_declined"]))
    plateau = [r["floor"] for r in sweep
               if (r["answerable_kept"], r["unanswerable_declined"]) == (best["answerable_kept"],
                                                                          best["unanswerable_declined"])]
    mid = round((plateau[0] + plateau[-1]) / 2, 3)
    return {"questions": scored, "sweep": sweep, "best": best, "recommended_floor": mid,
            "answerable_scores": ans, "unanswerable_scores": una}


def calibrate_attribution(settings: Settings, backend: Any, results: Path,
                          questions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sweep the attribution floor on the sentences of a previous run (`--out` JSON of a full run).

    Positives: answer sentences that state the question's key phrase, scored against the passage that contains
    it. Negatives: every answer sentence scored against the passages of a question about another document
    (a sentence the notes given do not back).
    """
    from core.encoders import get_embedder
    from graphs.attribution import Attributor

    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    store = backend.collection(settings.collection, embedder.dim, {"embedding_model": embedder.model_id})
    attributor = Attributor(embedder)
    by_id = {q["id"]: q for q in questions}
    rows = [r for r in json.loads(results.read_text())["rows"] if r.get("passage_ids") and r.get("sentences")]
    passages = {r["id"]: [Hit.from_payload(rec.id, rec.payload) for rec in store.retrieve(r["passage_ids"])]
                for r in rows}
    pos: list[float] = []
    neg: list[float] = []
    for r in rows:
        q = by_id[r["id"]]
        sentences = [s["text"] for s in r["sentences"] if s["support"]]
        if not sentences:
            continue
        right = [h for h in passages[r["id"]] if passage_correct(h, q)] if q["answerable"] else []
        keyed = [s for s in sentences if _norm(q.get("key", "\0")) in _norm(s)]
        if right and keyed:
            pos += [float(x) for x in attributor._scores(keyed, right).max(axis=1)]
        others = [o for o in rows if o["id"] != r["id"] and by_id[o["id"]].get("doc") != q.get("doc")][:3]
        for o in others:
            neg += [float(x) for x in attributor._scores(sentences, passages[o["id"]]).max(axis=1)]
    sweep = []
    for floor in [round(x / 100, 2) for x in range(20, 81, 2)]:
        sweep.append({"floor": floor, "backed_kept": round(sum(p >= floor for p in pos) / max(1, len(pos)), 3),
                      "unbacked_rejected": round(sum(n < floor for n in neg) / max(1, len(neg)), 3)})
    return {"positives": len(pos), "negatives": len(neg), "sweep": sweep}


# ---------------------------------------------------------------------------------------------- run
def run(settings: Settings, backend: Any, questions: Sequence[dict[str, Any]], verbose: bool = True,
        ) -> list[dict[str, Any]]:
    """Every question through the full graph with the configured LLM."""
    from graphs.engine import AnswerEngine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = AnswerEngine(settings, backend, checkpointer_path=Path(tmp) / "bench.sqlite3")
        try:
            engine.ask("What is Python?", "warmup")  # starts the server and loads the models, not measured
            for q in questions:
                thread = f"q-{q['id']}-{uuid.uuid4().hex[:6]}"
                for earlier in q.get("history", []):
                    engine.ask(earlier, thread)
                answer = engine.ask(q["question"], thread)
                row = score(q, answer)
                rows.append(row)
                if verbose:
                    mark = ("✓" if row.get("cited_correct") else "✗") if q["answerable"] else \
                        ("✓" if not row["covered"] else "✗")
                    print(f"{mark} {q['id']:<16} ttft {row['ttft'] or 0:5.1f}s  {answer.text[:110]!r}",
                          file=sys.stderr, flush=True)
        finally:
            engine.close()
    return rows


def _pct(values: Sequence[float], p: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1], 3) if len(values) > 1 \
        else round(values[0], 3)


def main(argv: list[str] | None = None) -> int:
    """Command line: build the index, then calibrate or run the question set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--variant", default="default", help="packaged model: default (1.5B) | fast (0.5B)")
    parser.add_argument("--calibrate", action="store_true", help="retrieval only: sweep the answerability floor")
    parser.add_argument("--floor", type=float, default=None, help="ANSWER_FLOOR for this run")
    parser.add_argument("--attribution", type=Path, default=None,
                        help="sweep the attribution floor on the sentences of this earlier run's JSON")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--only", nargs="*", help="question ids")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {"llm_variant": args.variant, "llm_port": 8777}
    if args.variant == "fast":
        overrides["llm_model"] = "qwen2.5-coder-0.5b-instruct"
    settings = bench_settings(args.workdir, **overrides)
    if args.floor is not None:
        set_option(settings, "answer_floor", args.floor)
    docs = fetch_pydocs(args.workdir)
    questions = load_questions(args.questions)
    if args.only:
        questions = [q for q in questions if q["id"] in set(args.only)]
    if args.limit:
        questions = questions[: args.limit]
    backend = build_index(settings, docs)
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.attribution:
            cal = calibrate_attribution(settings, backend, args.attribution, questions)
            print(f"{cal['positives']} backed sentences, {cal['negatives']} unbacked sentence/passage sets")
            print("floor  backed_kept  unbacked_rejected")
            for r in cal["sweep"]:
                print(f"{r['floor']:.2f}   {r['backed_kept']:.3f}        {r['unbacked_rejected']:.3f}")
            (results_dir / "attribution_calibration.json").write_text(json.dumps(cal, indent=2))
            return 0
        if args.calibrate:
            cal = calibrate(settings, backend, questions)
            for r in cal["questions"]:
                print(f"{'A' if r['answerable'] else 'U'} {r['score']:.3f} (dense {r['dense']:.3f}, coverage "
                      f"{r['coverage']:.2f}) {r['id']:<16} top={r['top']}"
                      f"{'' if not r['answerable'] else '  retrieved=' + str(r['retrieved_correct'])}")
            print("floor  answerable_kept  unanswerable_declined  balanced")
            for r in cal["sweep"]:
                if r["floor"] * 100 % 2 == 0:
                    print(f"{r['floor']:.2f}   {r['answerable_kept']:.3f}            {r['unanswerable_declined']:.3f}"
                          f"                  {r['balanced']:.3f}")
            print(f"best {cal['best']}; recommended ANSWER_FLOOR={cal['recommended_floor']}")
            out = args.out or results_dir / "answer_calibration.json"
            out.write_text(json.dumps(cal, indent=2))
            return 0
        started = time.perf_counter()
        rows = run(settings, backend, questions)
        summary = summarize(rows)
        summary.update(
            variant=args.variant, model=settings.llm_model, seconds=round(time.perf_counter() - started, 1),
            ttft_p50=_pct([r["ttft"] for r in rows if r["ttft"]], 50),
            ttft_p95=_pct([r["ttft"] for r in rows if r["ttft"]], 95),
            total_p50=_pct([r["total_s"] for r in rows if r["total_s"]], 50),
            total_p95=_pct([r["total_s"] for r in rows if r["total_s"]], 95),
            floor=getattr(settings, "answer_floor", None), load_avg=os.getloadavg(),
        )
        print(json.dumps(summary, indent=2))
        out = args.out or results_dir / f"answer_quality-{args.variant}.json"
        out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2, ensure_ascii=False))
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
