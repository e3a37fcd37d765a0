"""The reranker's training code on real documents: pairs, exclusions, mined negatives, and a 2-step run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from core.encoders import Embedder
from core.settings import Settings
from retrieval.rerank import Reranker
from retrieval.training.data import (
    PY_SOURCES,
    Example,
    PairCounts,
    build_pairs,
    clean_heading,
    fetch_training_docs,
    load_sections,
    mine_hard_negatives,
    strip_heading,
    training_pages,
)
from retrieval.training.train import (
    TrainConfig,
    build_model,
    dev_scores,
    negatives_for,
    save_model,
    train,
    write_card,
)

ARTIFACTS = Path(__file__).parent / "artifacts"
FAQ_PAGES = ("pkg-basics.en.html", "pkgtools.en.html")


@pytest.fixture(scope="module")
def faq_root() -> Path:
    """Debian's FAQ (debian-faq, ~0.5 MB), downloaded once into the git-ignored test artifacts."""
    try:
        return fetch_training_docs(ARTIFACTS / "training-docs", debs=("debian-faq",))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:  # no apt here: nothing real to test on
        pytest.skip(f"apt-get download debian-faq failed: {exc}")


@pytest.fixture(scope="module")
def faq_pairs(faq_root: Path) -> list:
    """Heading → body pairs of two real FAQ pages, through the project's HTML loader."""
    faq = faq_root / "usr/share/doc/debian/FAQ"
    sections = [s for name in FAQ_PAGES for s in load_sections("debian-faq", faq / name, f"debian-faq/{name}")]
    return build_pairs(sections, PairCounts())


def test_clean_heading_and_strip() -> None:
    title = ":mod:`os.path` --- Common pathname manipulations"
    assert clean_heading(title) == "os.path — Common pathname manipulations"
    assert clean_heading("7.2. What is a Debian control file?") == "What is a Debian control file?"
    assert clean_heading("A.1.3 Registering :ref:`native routines <reg>`") == "Registering native routines"
    assert strip_heading("Title\n=====\n\nBody text.", "Title") == "Body text."


def test_pairs_from_real_pages(faq_pairs: list) -> None:
    assert len(faq_pairs) >= 10
    queries = [p.query for p in faq_pairs]
    assert len(set(q.lower() for q in queries)) == len(queries)  # unambiguous
    assert any(q.startswith("What is a Debian") for q in queries)
    for p in faq_pairs:
        assert not p.query[0].isdigit(), p.query  # section numbers are stripped
        assert not p.body.startswith(p.heading_path[-1])  # the heading is not in its own positive
        assert len(p.body) >= 200


def test_evaluation_pages_are_excluded(tmp_path: Path) -> None:
    src = tmp_path / PY_SOURCES
    for rel in ("faq/general.rst.txt", "tutorial/venv.rst.txt", "library/json.rst.txt", "library/os.rst.txt",
                "whatsnew/changelog.rst.txt", "howto/sorting.rst.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("Title\n=====\n\nText.\n")
    kept = {rel for _, _, rel in training_pages(tmp_path, excluded={"library/json.rst.txt"})}
    assert kept == {"python3.11/library/os.rst.txt", "python3.11/howto/sorting.rst.txt"}


def test_negatives_and_two_training_steps(faq_pairs: list, settings: Settings, embedder: Embedder,
                                          tmp_path: Path) -> None:
    pairs = faq_pairs[:16]
    examples = mine_hard_negatives(pairs, settings=settings, embedder=embedder, workdir=tmp_path / "mine",
                                   negatives=2, depth=10, pool=8, progress=False)
    assert len(examples) == len(pairs)
    for e in examples:
        assert isinstance(e, Example) and len(e.negatives) == 2
        assert e.positive not in e.negatives
    assert sum(e.mined for e in examples) >= len(examples)  # most negatives come from the hybrid search
    assert sum(1 for e in examples if e.positive_rank) >= len(examples) // 2

    cfg = TrainConfig(layers=1, steps=2, batch_queries=2, negatives=2, hard_negatives=1, max_length=64)
    import random

    group = negatives_for(examples[0], examples, cfg, random.Random(0))
    assert group[0] == examples[0].negatives[0]  # one mined negative, then another query's positive
    assert group[1] in {e.positive for e in examples[1:]}
    ce = build_model(cfg.layers, cfg.max_length)
    log = train(ce, examples, cfg)
    assert log["steps_done"] == 2
    out = tmp_path / "model"
    size = save_model(ce, out)
    scores = {"before": dev_scores(ce, examples[:4], 64), "after": dev_scores(ce, examples[:4], 64)}
    write_card(out, cfg=cfg, counts=PairCounts(), log_=log, scores=scores, size=size,
               data={"positive_in_top": 0.5, "positive_median_rank": 1, "mined_share": 1.0,
                     "train_by_source": {}, "dev_by_source": {}})
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert "## Data" in (out / "README.md").read_text()

    rr = Reranker(str(out), max_length=64)  # the product's loader, offline, from a plain folder
    assert rr.available, rr.status
    import torch

    assert next(rr._model.parameters()).dtype == torch.float32  # type: ignore[union-attr]  # fp16 file, fp32 math
    from core.types import Hit

    hits = [Hit(str(i), "d", i, e.positive, "/x", "", "text", 0, 1) for i, e in enumerate(examples[:3])]
    ranked = rr.rerank(examples[0].query, hits)
    assert len(ranked) == 3 and all("rerank" in h.scores for h in ranked)
