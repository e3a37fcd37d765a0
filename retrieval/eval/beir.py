"""Loading BEIR-format datasets: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.

The format (https://github.com/beir-cellar/beir): one JSON object per line with `_id`, `title`, `text`
for documents and `_id`, `text` for queries; qrels are tab-separated `query-id corpus-id score` with a
header line. Only judgements with a positive score count as relevant.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DatasetUnavailable(Exception):
    """A dataset that cannot be evaluated (yet); the message says why, for the report."""


@dataclass(frozen=True)
class BeirDoc:
    """One corpus document."""

    id: str
    title: str
    text: str


@dataclass
class BeirDataset:
    """A loaded dataset: the corpus, the judged queries of one split, and their relevance judgements."""

    name: str
    path: Path
    split: str
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Identifies the corpus file's version (size and mtime), for reusing an ingested scratch store."""
        st = (self.path / "corpus.jsonl").stat()
        return f"{self.name}:{st.st_size}:{st.st_mtime_ns}:{len(self.corpus)}"


def _read_jsonl(path: Path, what: str) -> list[dict]:
    rows: list[dict] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                # A half-copied file usually breaks on its last line: say so rather than evaluate a partial corpus.
                raise DatasetUnavailable(
                    f"{path} line {n} is not valid JSON ({exc.msg}); is the {what} still being written?"
                ) from None
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Positive judgements of one qrels file: query id → {doc id: grade}."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                grade = int(float(row[2]))
            except ValueError:
                continue
            if grade > 0:
                qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(path: Path | str, split: str = "test", max_queries: int | None = None) -> BeirDataset:
    """Load a BEIR dataset folder; raises `DatasetUnavailable` with a clear reason when it is incomplete.

    Queries are restricted to those judged in `split`; `max_queries` keeps the first N of them (smoke runs).
    """
    root = Path(path).expanduser()
    name = root.resolve().name
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not root.is_dir():
        raise DatasetUnavailable(f"{root} is not a folder")
    if not corpus_path.exists():
        raise DatasetUnavailable(f"{name}: no corpus.jsonl in {root} yet (only the queries and qrels are there); "
                                 "it is evaluated as soon as the corpus file appears")
    for p in (queries_path, qrels_path):
        if not p.exists():
            raise DatasetUnavailable(f"{name}: missing {p.relative_to(root)}")

    corpus: dict[str, BeirDoc] = {}
    for row in _read_jsonl(corpus_path, "corpus"):
        doc_id = str(row["_id"])
        corpus[doc_id] = BeirDoc(doc_id, str(row.get("title") or ""), str(row.get("text") or ""))
    if not corpus:
        raise DatasetUnavailable(f"{name}: corpus.jsonl is empty")
    all_queries = {str(r["_id"]): str(r.get("text") or "") for r in _read_jsonl(queries_path, "queries")}
    qrels = read_qrels(qrels_path)

    warnings: list[str] = []
    unknown_q = [q for q in qrels if q not in all_queries]
    if unknown_q:
        warnings.append(f"{len(unknown_q)} judged queries have no text in queries.jsonl; skipped")
    judged_docs = {d for rel in qrels.values() for d in rel}
    missing = judged_docs - corpus.keys()
    if missing:
        # Relevant documents absent from the corpus make every metric an underestimate: warn loudly.
        warnings.append(f"{len(missing)} of {len(judged_docs)} judged documents are not in corpus.jsonl")
    ids = [q for q in qrels if q in all_queries and all_queries[q].strip()]
    if max_queries is not None:
        ids = ids[:max_queries]
    if not ids:
        raise DatasetUnavailable(f"{name}: no judged queries in split {split!r}")
    for w in warnings:
        log.warning("%s: %s", name, w)
    return BeirDataset(
        name=name,
        path=root,
        split=split,
        corpus=corpus,
        queries={q: all_queries[q] for q in ids},
        qrels={q: qrels[q] for q in ids},
        warnings=warnings,
    )
