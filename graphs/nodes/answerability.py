"""`assess`: decide from retrieval scores, before any generation, whether the notes can answer at all.

The packaged model answers unanswerable questions from its own knowledge, and refuses answerable ones when
told to decline, so the decision is not left to it. The relevance signal is the mean of two numbers that are
comparable across questions (unlike the fused RRF score, which depends only on ranks):

- the best dense cosine among the hits: is anything in the notes about this topic?
- the share of the question's content words found in the top passages: does the notes' text mention what
  was asked? A question about "tracemalloc" or "Django" over Python docs that never name them scores high
  on topic similarity alone, but low here.

On the pydocs question set, dense alone at its best floor kept 86% of answerable questions and declined all
unanswerable ones; the mean kept 100% and declined 90% at the floor chosen (`answer_floor`, calibrated by
`benchmarks/answer_quality.py --calibrate`; see docs/benchmarks.md "Answers").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langgraph.runtime import Runtime

from core.types import Hit
from graphs.attribution import content_tokens
from graphs.nodes.common import hit_summary, step
from graphs.state import AnswerContext, AnswerState

DEFAULT_ANSWER_FLOOR = 0.41  # packaged all-MiniLM-L6-v2, see docs/benchmarks.md "Answers"
COVERAGE_PASSAGES = 4
DEFAULT_ANSWER_PASSAGES = 4  # the CPU default prefills ~23 tok/s: 4 passages of ~256 tokens is ~45 s cold
CLOSEST_SHOWN = 3


def relevance(query: str, hits: Sequence[Hit]) -> dict[str, float]:
    """The answerability signal: `score` = mean of `dense` (best cosine among the hits) and `coverage` (share of
    the query's content words that occur in the top passages, headings included)."""
    dense = max((h.scores["dense"] for h in hits if "dense" in h.scores), default=0.0)
    wanted = set(content_tokens(query))
    top = hits[:COVERAGE_PASSAGES]
    found = set(content_tokens(" ".join(f"{h.text} {' '.join(h.heading_path)}" for h in top)))
    coverage = len(wanted & found) / len(wanted) if wanted and top else 0.0
    return {"score": (dense + coverage) / 2, "dense": dense, "coverage": coverage}


def answer_floor(ctx: AnswerContext) -> float:
    """The calibrated floor (`ANSWER_FLOOR`)."""
    return float(ctx.setting("answer_floor", DEFAULT_ANSWER_FLOOR))


@step("assess")
def assess(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Pick the passages to number and decide `covered`; below the floor the LLM is skipped entirely."""
    ctx = runtime.context
    hits = list(state.get("hits", []))
    floor = answer_floor(ctx)
    signal = relevance(state.get("standalone") or state["question"], hits)
    score = signal["score"]
    covered = bool(hits) and score >= floor
    n = int(ctx.setting("answer_passages", DEFAULT_ANSWER_PASSAGES))
    passages = hits[:n] if covered else []
    reason = ("no passages found" if not hits else
              f"relevance {score:.3f} {'≥' if covered else '<'} floor {floor:.3f} (dense {signal['dense']:.3f}, "
              f"coverage {signal['coverage']:.2f})")
    info = {"signal": "mean(dense, coverage)", "score": round(score, 4), "dense": round(signal["dense"], 4),
            "coverage": round(signal["coverage"], 3), "floor": floor, "covered": covered, "reason": reason}
    return {
        "covered": covered,
        "answerability": info,
        "passages": passages,
        "closest": [] if covered else hits[:CLOSEST_SHOWN],
        "steps": {"assess": {**info, "passages": [hit_summary(h, i) for i, h in enumerate(passages, start=1)]}},
    }


def route_after_assess(state: AnswerState) -> Literal["generate", "check_citations"]:
    """Generate only when the notes can answer; otherwise straight to the 'not covered' reply."""
    return "generate" if state.get("covered") else "check_citations"
