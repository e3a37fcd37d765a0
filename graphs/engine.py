"""The answer engine: what the CLI and the Streamlit app call to ask questions and manage conversations.

It owns the compiled graph, the checkpointer (one thread per conversation, surviving restarts) and the
collaborators the nodes use. `stream()` yields step events while nodes run, token events while the model
writes, then one final event with the checked `Answer` (before `write_memory`, so memory never delays it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.store.base import BaseStore

from core.encoders import get_bm25, get_embedder
from core.settings import Settings
from core.types import Citation, Hit
from graphs.attribution import Attributor
from graphs.checkpoint import open_persistence
from graphs.graph import build_graph
from graphs.nodes.common import message_text
from graphs.state import AnswerContext, AnswerState, merge_steps
from retrieval.filters import SearchFilters
from retrieval.search import Retriever

log = logging.getLogger(__name__)

# The answer is final when this node has run; `write_memory` follows off the hot path.
FINAL_NODE = "check_citations"
DEFAULT_ATTRIBUTION_FLOOR = 0.45


@dataclass
class Answer:
    """A checked answer. `steps` holds per-node timings and details (hits per stage with scores, reranker
    status, LLM info) for the "how I answered" view."""

    text: str
    citations: list[Citation]
    covered: bool
    flagged: list[str]
    unsupported: list[str]
    closest: list[Hit]
    rewritten_query: str
    steps: dict[str, Any]


@dataclass
class AnswerEvent:
    """One streamed event: `step` (a node started or finished), `token` (answer text), `final`, `error`."""

    kind: Literal["step", "token", "final", "error"]
    node: str = ""
    text: str = ""
    answer: Answer | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _turn_input(question: str) -> AnswerState:
    # Every per-turn key is reset, so nothing of the previous turn leaks into this one.
    return {
        "messages": [HumanMessage(content=question)], "question": question, "standalone": question,
        "answer_question": question,
        "queries": [question], "memories": [], "memory_block": "", "candidates": [], "hits": [], "passages": [],
        "covered": False, "answerability": {}, "draft": "", "answer": "", "citations": [], "flagged": [],
        "unsupported": [], "closest": [], "steps": None,  # type: ignore[typeddict-item]
    }


def answer_from_state(state: dict[str, Any]) -> Answer:
    """The `Answer` a finished (or final-node) state describes."""
    steps = dict(state.get("steps") or {})
    steps["timings"] = {node: d.get("seconds") for node, d in steps.items() if isinstance(d, dict) and "seconds" in d}
    steps.setdefault("reranker_status", (steps.get("rerank") or {}).get("reranker_status", ""))
    steps.setdefault("llm", (steps.get("generate") or {}).get("llm", {}))
    steps["answerability"] = state.get("answerability", {})
    return Answer(
        text=state.get("answer", ""),
        citations=list(state.get("citations", [])),
        covered=bool(state.get("covered")),
        flagged=list(state.get("flagged", [])),
        unsupported=list(state.get("unsupported", [])),
        closest=list(state.get("closest", [])),
        rewritten_query=state.get("standalone") or state.get("question", ""),
        steps=steps,
    )


class AnswerEngine:
    """Questions in, checked and cited answers out; conversations persist in the checkpointer."""

    def __init__(self, settings: Settings, backend: Any, *, chat_model: BaseChatModel | None = None,
                 retriever: Retriever | None = None, checkpointer_path: Path | str | None = None,
                 store: BaseStore | None = None) -> None:
        """`chat_model=None` starts the configured LLM (`make_chat_model(settings, ensure_llm(settings))`) on
        first use; `backend` is only needed when no `retriever` is given; `store` is the LangGraph store the
        memory nodes use (default: the `memories` collection of `backend`, see `engine.memory`)."""
        self.settings = settings
        self.backend = backend
        self._chat_model = chat_model
        self._llm_info: dict[str, Any] = {"model": getattr(chat_model, "model_name", type(chat_model).__name__)} \
            if chat_model is not None else {}
        self._retriever = retriever
        self._attributor: Attributor | None = None
        self._lock = threading.Lock()
        self.persistence = open_persistence(settings, checkpointer_path)
        self._memory: Any = None
        if store is not None or backend is not None:
            from graphs.memory import MemoryService

            # The memories collection shares the retriever's embedder (and its model id).
            self._memory = MemoryService(settings, backend, store=store, embedder=lambda: self.retriever.embedder)
            store = self._memory.store
        self.graph = build_graph(checkpointer=self.persistence.checkpointer, store=store)

    @property
    def memory(self) -> Any:
        """The `MemoryService` over the store the graph uses (None without a backend or a store)."""
        return self._memory

    # ------------------------------------------------------------------ collaborators (lazy)
    @property
    def retriever(self) -> Retriever:
        """The retriever over the chunks collection (opened on first use)."""
        if self._retriever is None:
            with self._lock:
                if self._retriever is None:
                    s = self.settings
                    if self.backend is None:
                        raise ValueError("AnswerEngine needs a backend or a retriever")
                    embedder = get_embedder(s.embedding_model, s.embed_batch_size, s.torch_threads)
                    store = self.backend.collection(s.collection, embedder.dim, {"embedding_model": embedder.model_id})
                    self._retriever = Retriever(s, store, embedder, get_bm25())
        return self._retriever

    @property
    def attributor(self) -> Attributor:
        """Sentence → passage matcher, sharing the retriever's embedder and reranker."""
        if self._attributor is None:
            r = self.retriever
            floor = float(getattr(self.settings, "attribution_floor", DEFAULT_ATTRIBUTION_FLOOR))
            self._attributor = Attributor(r.embedder, r.reranker, floor=floor)
        return self._attributor

    def chat_model(self) -> BaseChatModel:
        """The chat model, started on first use (the packaged server can take a few seconds to load)."""
        if self._chat_model is None:
            with self._lock:
                if self._chat_model is None:
                    from graphs.llm import make_chat_model
                    from graphs.llm_server import ensure_llm

                    url = ensure_llm(self.settings)
                    self._chat_model = make_chat_model(self.settings, url)
                    self._llm_info = {"model": self.settings.llm_model, "base_url": url,
                                      "variant": None if self.settings.llm_base_url else self.settings.llm_variant}
        return self._chat_model

    def llm_info(self) -> dict[str, Any]:
        """Which model answered (model name, endpoint, packaged variant)."""
        return dict(self._llm_info)

    def _context(self, user_id: str | None, filters: SearchFilters | None) -> AnswerContext:
        return AnswerContext(settings=self.settings, retriever=self.retriever, chat_model=self.chat_model,
                             attributor=self.attributor, filters=filters,
                             user_id=user_id or self.settings.user_id, llm_info=self.llm_info)

    @staticmethod
    def _config(thread_id: str, user_id: str | None) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id, "user_id": user_id or ""}}

    # ------------------------------------------------------------------ answering
    def stream(self, question: str, thread_id: str, user_id: str | None = None,
               filters: SearchFilters | None = None) -> Iterator[AnswerEvent]:
        """Answer `question` in conversation `thread_id`, yielding events as they happen.

        Iterate to the end: the final event comes before `write_memory`, which still has to run.
        """
        question = question.strip()
        if not question:
            yield AnswerEvent("error", text="empty question")
            return
        user = user_id or self.settings.user_id
        self.persistence.conversations.touch(thread_id, user_id=user, title=question, add_turn=True)
        state: dict[str, Any] = dict(_turn_input(question))
        state["steps"] = {}
        started = time.perf_counter()
        try:
            context = self._context(user, filters)
            for mode, chunk in self.graph.stream(_turn_input(question), self._config(thread_id, user),
                                                 context=context, stream_mode=["custom", "updates"]):
                if mode == "custom":
                    if chunk.get("type") == "token":
                        yield AnswerEvent("token", node="generate", text=chunk["text"])
                    elif chunk.get("type") == "step":
                        yield AnswerEvent("step", node=chunk["node"], data=dict(chunk))
                    continue
                for node, update in (chunk or {}).items():
                    for key, value in (update or {}).items():
                        if key == "steps":
                            state["steps"] = merge_steps(state["steps"], value)
                        elif key == "messages":
                            state["messages"] = [*state["messages"], *value]
                        else:
                            state[key] = value
                    if node == FINAL_NODE:
                        answer = answer_from_state(state)
                        answer.steps["total"] = round(time.perf_counter() - started, 4)
                        yield AnswerEvent("final", node=node, text=answer.text, answer=answer)
        except Exception as exc:  # shown to the user; the thread keeps the question for a retry
            log.exception("answering failed")
            yield AnswerEvent("error", text=f"{type(exc).__name__}: {exc}", data={"exception": exc})
        finally:
            self.persistence.conversations.touch(thread_id)

    def ask(self, question: str, thread_id: str, user_id: str | None = None,
            filters: SearchFilters | None = None) -> Answer:
        """Answer without streaming (runs the whole graph); raises on failure."""
        answer: Answer | None = None
        for event in self.stream(question, thread_id, user_id, filters):
            if event.kind == "final":
                answer = event.answer
            elif event.kind == "error":
                exc = event.data.get("exception")
                raise exc if isinstance(exc, Exception) else RuntimeError(event.text)
        if answer is None:
            raise RuntimeError("the answer graph finished without an answer")
        return answer

    # ------------------------------------------------------------------ conversations
    def conversations(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Conversations, most recent first: `{thread_id, title, updated_at, turns}`."""
        return [{k: c[k] for k in ("thread_id", "title", "updated_at", "turns")}
                for c in self.persistence.conversations.list(user_id)]

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's messages: `{role, content, citations}` (answers also carry `covered`, `closest`)."""
        snapshot = self.graph.get_state(self._config(thread_id, None))
        out: list[dict[str, Any]] = []
        for m in (snapshot.values or {}).get("messages", []):
            if isinstance(m, HumanMessage):
                out.append({"role": "user", "content": message_text(m), "citations": []})
            elif isinstance(m, AIMessage):
                extra = m.additional_kwargs or {}
                out.append({"role": "assistant", "content": message_text(m),
                            "citations": list(extra.get("citations", [])), "covered": extra.get("covered", True),
                            "closest": list(extra.get("closest", [])),
                            "unsupported": list(extra.get("unsupported", [])),
                            "flagged": list(extra.get("flagged", []))})
        return out

    def rename(self, thread_id: str, title: str) -> None:
        """Give a conversation a title."""
        self.persistence.conversations.rename(thread_id, title)

    def delete(self, thread_id: str) -> None:
        """Delete a conversation and all its checkpoints."""
        self.persistence.checkpointer.delete_thread(thread_id)
        self.persistence.conversations.delete(thread_id)

    def close(self) -> None:
        """Close the checkpoint database (the LLM server is process-wide and stops at exit)."""
        self.persistence.close()

    def __enter__(self) -> AnswerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
