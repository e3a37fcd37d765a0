"""Training pairs for the reranker: section heading → section body, from real documentation nobody here wrote.

Sources (Debian packages, fetched with `apt-get download`, never committed):

- `python3.11-doc`: every `_sources/**/*.rst.txt` page except `faq/` (the pyfaq evaluation set is built from
  it), `tutorial/` and the library pages of the answer-quality corpus (`benchmarks/questions/pydocs.jsonl`
  and `benchmarks/answer_quality.LIBRARY_PAGES`), so both evaluation sets stay unseen;
- `r-doc-html`: R-exts, R-lang and R-ints (R-FAQ, R-intro, R-data and R-admin are kept out);
- `debian-faq` (the English HTML pages) and `live-manual-html` (the English single-page manual).

Pages are read with the project's own loaders (`ingest.loaders`), so a section is exactly what ingestion
sees. The query is the section's heading (markup and numbering removed; a heading used more than once gets
its parent heading in front), the positive passage is the first chunk of the body with the heading line
removed. Hard negatives come from the project's own hybrid search (`Retriever.search`, the product's
fusion settings) over a scratch Qdrant Edge index of every body, ingested through the real pipeline.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import random
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.encoders import Embedder, get_bm25
from core.settings import PROJECT_ROOT, Settings
from ingest.loaders.html import load_html
from ingest.loaders.text import load_text
from retrieval.eval.beir import BeirDataset, BeirDoc
from retrieval.eval.harness import ScratchIndex
from retrieval.rerank import Reranker
from retrieval.search import Retriever

log = logging.getLogger(__name__)

DEFAULT_ROOT = PROJECT_ROOT / ".cache" / "training-docs"
DEBS = ("python3.11-doc", "r-doc-html", "debian-faq", "live-manual-html")
QUESTIONS = PROJECT_ROOT / "benchmarks" / "questions" / "pydocs.jsonl"

PY_SOURCES = "usr/share/doc/python3.11/html/_sources"
R_MANUALS = "usr/share/R/doc/manual"
R_TRAIN = ("R-exts", "R-lang", "R-ints")  # R-FAQ, R-intro, R-data and R-admin stay out of training
DEBIAN_FAQ = "usr/share/doc/debian/FAQ"
LIVE_MANUAL = "usr/share/doc/live-manual/html/live-manual.en.html"

# faq/ is the pyfaq evaluation set; tutorial/ is most of the answer-quality corpus.
PY_EXCLUDED_DIRS = ("faq/", "tutorial/")
# Thousands of one-line change entries under the same few headings ("Library", "Build"): no heading → body signal.
PY_EXCLUDED_FILES = ("whatsnew/changelog.rst.txt",)

MIN_BODY_CHARS = 200  # as the pyfaq builder: shorter sections are stubs ("See also", a lone directive)
MAX_BODY_CHARS = 1500  # ≈ 1–2 chunks: the positive is the first chunk, and the index stays quick to build
MIN_QUERY_CHARS = 4

_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)*:`([^`<]*?)\s*(?:<[^>]*>)?`")
_NUMBERING = re.compile(r"^(?:(?:Appendix\s+)?[A-Z](?:\.\d+)+|\d+(?:\.\d+)*)\.?\s+")
_ADORNMENT_LINE = re.compile(r"^\s*([=\-~^\"'`#*+:._<>!$%&(),/;?@\[\\\]{|}])\1+\s*$")


@dataclass(frozen=True)
class SectionText:
    """One heading section of a training page, as the project's loader cut it."""

    source: str  # python-doc | r-manuals | debian-faq | live-manual
    doc: str  # page path relative to its package root
    heading_path: tuple[str, ...]
    body: str  # the section text without its heading


@dataclass(frozen=True)
class Pair:
    """A training query (a heading) and the passage it names (its section body)."""

    id: str
    source: str
    doc: str
    heading_path: tuple[str, ...]
    query: str
    body: str


@dataclass
class Example:
    """One listwise training group: a query, its positive passage and hard negatives."""

    pair_id: str
    source: str
    query: str
    positive: str
    negatives: list[str]
    positive_rank: int | None = None  # rank of the positive section in the hybrid search (diagnostics)
    mined: int = 0  # how many of `negatives` came from the search (the rest are random passages)

    def to_json(self) -> dict[str, object]:
        """Serialisable form."""
        return asdict(self)


@dataclass
class PairCounts:
    """What the pair builder kept and dropped, per source (printed and written into the model card)."""

    pages: Counter[str] = field(default_factory=Counter)
    sections: Counter[str] = field(default_factory=Counter)
    short: Counter[str] = field(default_factory=Counter)
    ambiguous: Counter[str] = field(default_factory=Counter)
    pairs: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, dict[str, int]]:
        """Plain dicts."""
        # not asdict(): it rebuilds a Counter from (key, value) tuples, counting the tuples
        return {f: dict(getattr(self, f)) for f in ("pages", "sections", "short", "ambiguous", "pairs")}


# ------------------------------------------------------------------------------------------------ fetching
def fetch_training_docs(root: Path = DEFAULT_ROOT, debs: Sequence[str] = DEBS) -> Path:
    """Download and unpack the Debian documentation packages under `root/x` once; returns that folder."""
    out = root / "x"
    marker = root / ".complete"
    if marker.exists() and marker.read_text().split() == list(debs):
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        subprocess.run(["apt-get", "download", *debs], cwd=tmp, check=True, capture_output=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    marker.write_text(" ".join(debs) + "\n")
    return out


def answer_quality_docs(questions: Path = QUESTIONS) -> set[str]:
    """Python-doc pages (relative to `_sources/`) that the answer-quality set is asked over."""
    docs = {q["doc"] for q in map(json.loads, filter(str.strip, questions.read_text().splitlines())) if q.get("doc")}
    try:  # the benchmark's corpus also holds library pages no question names yet: keep them unseen too
        pages = importlib.import_module("benchmarks.answer_quality").LIBRARY_PAGES
        docs |= {f"library/{p}.rst.txt" for p in pages}
    except ImportError:  # run outside the repository root: the question file alone still names the pages asked
        log.warning("benchmarks.answer_quality not importable; excluding only the pages its questions name")
    return docs


def training_pages(root: Path, excluded: set[str] | None = None) -> list[tuple[str, Path, str]]:
    """(source, file, relative name) of every page used for training, in a stable order."""
    excluded = answer_quality_docs() if excluded is None else excluded
    pages: list[tuple[str, Path, str]] = []
    py = root / PY_SOURCES
    for f in sorted(py.rglob("*.rst.txt")):
        rel = f.relative_to(py).as_posix()
        if rel.startswith(PY_EXCLUDED_DIRS) or rel in PY_EXCLUDED_FILES or rel in excluded:
            continue
        pages.append(("python-doc", f, f"python3.11/{rel}"))
    for name in R_TRAIN:
        f = root / R_MANUALS / f"{name}.html"
        if f.exists():
            pages.append(("r-manuals", f, f"R/{name}.html"))
    for f in sorted((root / DEBIAN_FAQ).glob("*.en.html")):
        pages.append(("debian-faq", f, f"debian-faq/{f.name}"))
    live = root / LIVE_MANUAL
    if live.exists():
        pages.append(("live-manual", live, f"live-manual/{live.name}"))
    return pages


# ------------------------------------------------------------------------------------------------ sections
def clean_heading(text: str) -> str:
    """A heading as a user would type it: rST roles and literals unwrapped, section numbers dropped."""
    text = _ROLE.sub(r"\1", text)
    text = text.replace("``", "").replace("`", "").replace("*", "").replace(" --- ", " — ")
    text = _NUMBERING.sub("", text.strip())
    return " ".join(text.split()).rstrip(":")


def strip_heading(section_text: str, heading: str) -> str:
    """The section text without its title line(s): the title and any rST over/underline at the top."""
    lines = section_text.split("\n")
    i = 0
    while i < min(len(lines), 4) and (not lines[i].strip() or lines[i].strip() == heading.strip()
                                      or _ADORNMENT_LINE.match(lines[i])):
        i += 1
    return "\n".join(lines[i:]).strip()


def load_sections(source: str, path: Path, rel: str) -> list[SectionText]:
    """Heading sections of one page through the project's loaders (rST titles for `.rst.txt`, h1–h6 for HTML)."""
    data = path.read_bytes()
    doc = load_text(path, data, rst=True) if path.name.endswith(".rst.txt") else load_html(path, data)
    out = []
    for s in doc.sections:
        if not s.heading_path:
            continue  # text before the first heading: no query for it
        body = strip_heading(s.text, s.heading_path[-1])
        out.append(SectionText(source, rel, s.heading_path, body))
    return out


def build_pairs(sections: Iterable[SectionText], counts: PairCounts | None = None) -> list[Pair]:
    """Heading → body pairs; ambiguous headings get their parent in front, and are dropped if still ambiguous."""
    counts = counts if counts is not None else PairCounts()
    kept: list[tuple[SectionText, str]] = []
    for s in sections:
        counts.sections[s.source] += 1
        query = clean_heading(s.heading_path[-1])
        if len(s.body) < MIN_BODY_CHARS or len(query) < MIN_QUERY_CHARS:
            counts.short[s.source] += 1
            continue
        kept.append((s, query))
    seen = Counter(q.lower() for _, q in kept)
    named: list[tuple[SectionText, str]] = []
    for s, q in kept:
        if seen[q.lower()] > 1 and len(s.heading_path) > 1:
            q = f"{clean_heading(s.heading_path[-2])}: {q}"  # "Examples" → "csv — CSV File Reading: Examples"
        named.append((s, q))
    again = Counter(q.lower() for _, q in named)
    bodies: set[str] = set()
    pairs: list[Pair] = []
    for s, q in named:
        if again[q.lower()] > 1 or s.body in bodies:
            counts.ambiguous[s.source] += 1
            continue
        bodies.add(s.body)
        pid = f"{s.doc}#{len(pairs)}"
        pairs.append(Pair(pid, s.source, s.doc, s.heading_path, q, s.body[:MAX_BODY_CHARS]))
        counts.pairs[s.source] += 1
    return pairs


def collect_pairs(root: Path, excluded: set[str] | None = None) -> tuple[list[Pair], PairCounts]:
    """Every training pair from the unpacked packages under `root`, with the counts."""
    counts = PairCounts()
    sections: list[SectionText] = []
    for source, path, rel in training_pages(root, excluded):
        counts.pages[source] += 1
        try:
            sections.extend(load_sections(source, path, rel))
        except Exception as exc:  # one unreadable page must not stop a training run; it is counted out
            log.warning("skipping %s: %s", rel, exc)
    return build_pairs(sections, counts), counts


def sample_pairs(pairs: Sequence[Pair], cap: dict[str, int], seed: int) -> list[Pair]:
    """At most `cap[source]` pairs of each source (seeded sample), in the original order."""
    rng = random.Random(seed)
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_source.setdefault(p.source, []).append(i)
    keep: set[int] = set()
    for source, idx in by_source.items():
        n = cap.get(source)
        keep.update(idx if n is None or n >= len(idx) else rng.sample(idx, n))
    return [p for i, p in enumerate(pairs) if i in keep]


# ------------------------------------------------------------------------------------------------ negatives
def _related(a: Pair, b: Pair) -> bool:
    """Same page and one section encloses the other: its body may well answer the heading too."""
    if a.doc != b.doc:
        return False
    n = min(len(a.heading_path), len(b.heading_path))
    return a.heading_path[:n] == b.heading_path[:n]


def _write_corpus(path: Path, pairs: Sequence[Pair]) -> None:
    """The bodies as a BEIR corpus; rewritten only when they change, so the scratch index can be reused."""
    text = "".join(json.dumps({"_id": p.id, "title": "", "text": p.body}, ensure_ascii=False) + "\n" for p in pairs)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def mine_hard_negatives(pairs: Sequence[Pair], *, settings: Settings, embedder: Embedder, workdir: Path,
                        negatives: int = 3, depth: int = 30, pool: int = 20, seed: int = 13,
                        progress: bool = True) -> list[Example]:
    """One `Example` per pair: the body's first chunk as positive, `negatives` passages from the hybrid search.

    The bodies are ingested through the real pipeline into a scratch Qdrant Edge store under `workdir` (reused
    while the bodies do not change). Negatives are drawn at random (seeded) from the first `pool` search hits
    that are neither the positive section nor a section that encloses it or that it encloses; when too few
    remain, random passages of the corpus fill the group.
    """
    from tqdm import tqdm

    workdir.mkdir(parents=True, exist_ok=True)
    _write_corpus(workdir / "corpus.jsonl", pairs)
    by_id = {p.id: p for p in pairs}
    ds = BeirDataset("train-sections", workdir, "train", {p.id: BeirDoc(p.id, "", p.body) for p in pairs}, {}, {})
    index = ScratchIndex(ds, settings, embedder, workdir).open(progress)
    rng = random.Random(seed)
    try:
        assert index.store is not None
        first_chunk: dict[str, tuple[int, str]] = {}
        all_chunks: list[str] = []
        for rec in index.chunks():
            text, idx = rec.payload.get("text", ""), int(rec.payload.get("chunk_index", 0))
            all_chunks.append(text)
            for doc in index.docs_of([rec.payload.get("path", "")]):
                if doc not in first_chunk or idx < first_chunk[doc][0]:
                    first_chunk[doc] = (idx, text)
        all_chunks.sort()  # scroll order is the engine's; sorting keeps the random fill reproducible
        retriever = Retriever(index.settings, index.store, embedder, get_bm25(), reranker=Reranker(None))
        examples: list[Example] = []
        for p in tqdm(pairs, desc="mine negatives", unit="q", disable=not progress):
            if p.id not in first_chunk:
                continue
            positive = first_chunk[p.id][1]
            hits = retriever.search(p.query, k=depth, rerank=False, stage_scores=False).hits
            rank: int | None = None
            candidates: list[str] = []
            for r, h in enumerate(hits, start=1):
                docs = index.docs_of([h.path])
                if p.id in docs:
                    rank = rank or r
                    continue
                if any(_related(p, by_id[d]) for d in docs if d in by_id) or h.text == positive:
                    continue
                if h.text not in candidates:
                    candidates.append(h.text)
            picked = rng.sample(candidates[:pool], min(negatives, len(candidates[:pool])))
            mined = len(picked)
            while len(picked) < negatives and all_chunks:
                extra = rng.choice(all_chunks)
                if extra != positive and extra not in picked:
                    picked.append(extra)
            examples.append(Example(p.id, p.source, p.query, positive, picked, rank, mined))
    finally:
        index.close()
    return examples


def fingerprint(*parts: object) -> str:
    """A short stable hash of the data-building inputs (for caching mined examples)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]


def save_examples(path: Path, examples: Sequence[Example]) -> None:
    """Examples as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")


def load_examples(path: Path) -> list[Example]:
    """Examples written by `save_examples`."""
    return [Example(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
