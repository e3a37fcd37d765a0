"""The answer graph, read top to bottom:

    START → recall_memory ─┬─(history or multi_query)→ rewrite_query ─┐
                           └─────────────(first question)─────────────┴→ retrieve → rerank → assess
    assess ─┬─(covered)→ generate → check_citations
            └─(below the relevance floor)──────────→ check_citations      (reply: "My notes don't cover that.")
    check_citations → write_memory → END
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from graphs.nodes import (
    assess,
    check_citations,
    generate,
    has_history,
    memory_nodes,
    rerank,
    retrieve,
    rewrite_query,
    route_after_assess,
)
from graphs.state import AnswerContext, AnswerState


def route_after_recall(state: AnswerState, runtime: Runtime[AnswerContext]) -> Literal["rewrite_query", "retrieve"]:
    """Rewrite only when there is history to resolve (or variants to write): it costs an LLM call."""
    if has_history(state) or runtime.context.settings.multi_query:
        return "rewrite_query"
    return "retrieve"


def build_graph(checkpointer: BaseCheckpointSaver | None = None, store: BaseStore | None = None,
                ) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the answer graph. Run it with `context=AnswerContext(...)` and a `thread_id` per conversation."""
    recall_memory, write_memory = memory_nodes()
    builder = StateGraph(AnswerState, context_schema=AnswerContext)

    builder.add_node("recall_memory", recall_memory)
    builder.add_node("rewrite_query", rewrite_query)
    builder.add_node("retrieve", retrieve)
    builder.add_node("rerank", rerank)
    builder.add_node("assess", assess)
    builder.add_node("generate", generate)
    builder.add_node("check_citations", check_citations)
    builder.add_node("write_memory", write_memory)

    builder.add_edge(START, "recall_memory")
    builder.add_conditional_edges("recall_memory", route_after_recall, ["rewrite_query", "retrieve"])
    builder.add_edge("rewrite_query", "retrieve")
    builder.add_edge("retrieve", "rerank")
    builder.add_edge("rerank", "assess")
    builder.add_conditional_edges("assess", route_after_assess, ["generate", "check_citations"])
    builder.add_edge("generate", "check_citations")
    builder.add_edge("check_citations", "write_memory")
    builder.add_edge("write_memory", END)

    return builder.compile(checkpointer=checkpointer, store=store)
