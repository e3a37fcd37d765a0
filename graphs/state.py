"""The answer graph's state and run context.

`AnswerState` is what the checkpointer persists per conversation thread: the message history plus the
working values of the latest turn. `AnswerContext` holds the run's collaborators (retriever, chat model,
attributor) and per-request options (filters, user id); it is passed to every run and never persisted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from core.settings import Settings
from core.types import Citation, Hit
from retrieval.filters import SearchFilters
from retrieval.search import Retriever

NOT_COVERED = "My notes don't cover that."


def merge_steps(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer for `steps`: each node adds its own entry; a `None` write (a new turn) starts afresh."""
    if new is None:
        return {}
    return {**(old or {}), **new}


class AnswerState(TypedDict, total=False):
    """One conversation thread. Keys below `messages` are rewritten on every turn."""

    # Persisted history: HumanMessage per question, AIMessage per answer (its `additional_kwargs` carry the
    # answer's citations, so a reopened conversation shows its sources).
    messages: Annotated[list[AnyMessage], add_messages]

    question: str  # the user's words for this turn
    standalone: str  # the question rewritten to stand alone (equals `question` without history)
    # what the answer prompt asks; differs from `standalone` only when the rewrite was rejected and retrieval
    # searched with the previous question appended (a small model answers that appended question instead)
    answer_question: str
    queries: list[str]  # what retrieval searched: `standalone` plus any multi-query variants

    # Seam for long-term memory (graphs/memory/): `recall_memory` fills these; generate shows the block to
    # the model, labelled, citable as [M1], [M2], ...
    memories: list[dict[str, Any]]
    memory_block: str
    # Short-term memory (graphs/memory/summary.py): older turns folded into a rolling summary, and how many
    # messages it covers. Persisted across turns; `rewrite_query` shows it above the verbatim turns.
    summary: str
    summarised: int

    candidates: list[Hit]  # fused hybrid hits, best first
    hits: list[Hit]  # after reranking, best first
    passages: list[Hit]  # the numbered passages given to the model ([1] is passages[0])
    covered: bool  # decided before generation from retrieval scores (and after it, from attribution)
    answerability: dict[str, Any]  # score, floor, signal used, reason

    draft: str  # the model's raw text
    answer: str  # the checked text shown to the user
    citations: list[Citation]  # only the passages cited, numbered 1..m in order of first citation
    flagged: list[str]  # citation problems that were repaired or removed
    unsupported: list[str]  # sentences no passage supports
    closest: list[Hit]  # shown instead of an answer when the notes do not cover the question

    steps: Annotated[dict[str, Any], merge_steps]  # per node: seconds and what it did (for the UI)


@dataclass
class AnswerContext:
    """What nodes need besides the state. `chat_model` is a factory, so the LLM starts only when used."""

    settings: Settings
    retriever: Retriever
    chat_model: Callable[[], BaseChatModel]
    attributor: Any  # graphs.attribution.Attributor (typed loosely to keep this module import-light)
    filters: SearchFilters | None = None
    user_id: str = "default"
    llm_info: Callable[[], dict[str, Any]] | None = None

    def setting(self, name: str, default: Any) -> Any:
        """A setting that may not exist in `core.settings` yet (read with a default)."""
        return getattr(self.settings, name, default)
