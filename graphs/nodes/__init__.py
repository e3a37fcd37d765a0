"""The answer graph's nodes, one function each (see `graphs/graph.py` for how they connect)."""

from graphs.nodes.answerability import assess, route_after_assess
from graphs.nodes.citations import check_citations
from graphs.nodes.generate import generate
from graphs.nodes.memory_hooks import memory_nodes, recall_memory, write_memory
from graphs.nodes.retrieve import rerank, retrieve
from graphs.nodes.rewrite import has_history, rewrite_query

__all__ = [
    "assess",
    "check_citations",
    "generate",
    "has_history",
    "memory_nodes",
    "recall_memory",
    "rerank",
    "retrieve",
    "rewrite_query",
    "route_after_assess",
    "write_memory",
]
