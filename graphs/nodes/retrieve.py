"""`retrieve` (hybrid dense + BM25 per query, fused in Qdrant, queries fused by RRF) and `rerank`."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.nodes.common import hit_summary, step
from graphs.state import AnswerContext, AnswerState


@step("retrieve")
def retrieve(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Hybrid search for every query; keeps enough candidates for the reranker."""
    ctx = runtime.context
    s = ctx.settings
    queries = state.get("queries") or [state.get("standalone") or state["question"]]
    k = max(s.retrieval_k, s.rerank_candidates) if s.rerank else s.retrieval_k
    # Reranking is its own node (own timing, own status); per-branch scores feed the answerability check.
    result = ctx.retriever.search(queries, filters=ctx.filters, k=k, rerank=False, stage_scores=True)
    info = {"queries": result.queries, "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "hits": [hit_summary(h) for h in result.hits]}
    return {"candidates": result.hits, "steps": {"retrieve": info}}


@step("rerank")
def rerank(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Cross-encoder reorder of the candidates; the fused order (and a clear status) when no model loads."""
    ctx = runtime.context
    s = ctx.settings
    candidates = list(state.get("candidates", []))
    if not s.rerank:
        status = "off (RERANK=false)"
        hits = candidates
    else:
        reranker = ctx.retriever.reranker
        hits = reranker.rerank(state.get("standalone") or state["question"], candidates[: s.rerank_candidates])
        status = reranker.status
    hits = hits[: s.retrieval_k]
    info = {"reranker_status": status, "hits": [hit_summary(h) for h in hits]}
    return {"hits": hits, "steps": {"rerank": info}}
