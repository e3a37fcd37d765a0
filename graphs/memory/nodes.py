"""The memory nodes of the answer graph: `recall_memory` before retrieval, `write_memory` after the answer.

Both read the user id from `runtime.context.user_id` and the LangGraph store from `runtime.store`, and both
swallow their own failures (a memory problem must never cost the user an answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, SearchOp

from core.settings import Settings
from graphs.memory.consolidate import DEFAULT_CONFLICT, DEFAULT_DEDUPE, MemoryWriter
from graphs.memory.extract import about_the_user, candidates_for
from graphs.memory.models import ACTIVE, MemoryItem, memory_namespace
from graphs.memory.store import QdrantMemoryStore
from graphs.memory.summary import maybe_summarise
from graphs.nodes.common import step
from graphs.nodes.memory_hooks import format_memory_block
from graphs.state import AnswerContext, AnswerState

log = logging.getLogger(__name__)

DEFAULT_K = 4
DEFAULT_PROFILE_K = 6
DEFAULT_MIN_SCORE = 0.35
DEFAULT_SUMMARY_BUDGET = 1500


def recall(store: BaseStore, user_id: str, question: str, *, k: int = DEFAULT_K, profile_k: int = DEFAULT_PROFILE_K,
           min_score: float = DEFAULT_MIN_SCORE) -> list[MemoryItem]:
    """The memories for one turn: the user's preferences (always on; the most relevant first when there are
    many), then the current memories most relevant to `question` whose similarity reaches `min_score`.

    The question is searched as `about_the_user(question)`, in the third person the memories are written in.
    """
    ns = memory_namespace(user_id)
    query = about_the_user(question.strip()) or None
    ops = [SearchOp(ns, filter={"status": ACTIVE, "kind": "preference"}, limit=profile_k, query=query)]
    if query and k > 0:
        ops.append(SearchOp(ns, filter={"status": ACTIVE}, limit=k + profile_k, query=query))
    results = store.batch(ops)
    profile = [MemoryItem.from_item(i) for i in results[0] or []]  # type: ignore[union-attr]
    relevant = [MemoryItem.from_item(i) for i in (results[1] if len(results) > 1 else []) or []]  # type: ignore[union-attr]
    chosen = {m.id for m in profile}
    picked: list[MemoryItem] = []
    for m in relevant:
        if m.id in chosen or (m.score is not None and m.score < min_score):
            continue
        picked.append(m)
        chosen.add(m.id)
        if len(picked) >= k:
            break
    return profile + picked


def memory_record(m: MemoryItem) -> dict[str, Any]:
    """What the state (and the prompt block) keeps of a recalled memory."""
    return {"id": m.id, "text": m.text, "kind": m.kind, "score": None if m.score is None else round(m.score, 4),
            "updated_at": m.updated_at.isoformat()}


def _is_packaged_llama_cpp(settings: Settings, model: BaseChatModel) -> bool:
    if getattr(settings, "llm_base_url", None):
        return False
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        return False
    return isinstance(model, ChatOpenAI)


def remember_message(store: BaseStore, user_id: str, message: str, *, settings: Settings,
                     chat_model: Callable[[], BaseChatModel] | None,
                     embed: Callable[[Sequence[str]], np.ndarray] | None = None,
                     thread: str | None = None, turn: int | None = None) -> dict[str, Any]:
    """Apply one user message to long-term memory: forgets, corrections, explicit and extracted memories.

    Returns the details for the "how I answered" view: what the rules saw, the model's reply, each outcome.
    """
    writer = MemoryWriter(store, embed, dedupe=getattr(settings, "memory_dedupe_threshold", DEFAULT_DEDUPE),
                          conflict=getattr(settings, "memory_conflict_threshold", DEFAULT_CONFLICT))
    mode = str(getattr(settings, "memory_extraction", "auto"))
    p, found, info = candidates_for(message, chat_model, mode=mode,
                                    packaged_llama_cpp=lambda model: _is_packaged_llama_cpp(settings, model))
    outcomes: list[dict[str, Any]] = []
    for about in p.forget:
        deleted = writer.forget(user_id, about)
        outcomes.append({"action": "forgotten", "about": about, "deleted": [m.id for m in deleted]})
    for old, new, sentence in p.corrections:
        outcomes.extend(o.summary() for o in writer.correct(user_id, old, new, sentence, thread, turn))
    for cand in [*p.remember, *found]:
        outcomes.append(writer.remember(user_id, cand, thread, turn).summary())
    info["outcomes"] = outcomes
    return info


def _embed_for(store: BaseStore, ctx: AnswerContext) -> Callable[[Sequence[str]], np.ndarray]:
    def embed(texts: Sequence[str]) -> np.ndarray:
        embedder = store.embedder if isinstance(store, QdrantMemoryStore) else ctx.retriever.embedder
        return embedder.embed(list(texts))

    return embed


def _source(state: AnswerState) -> tuple[str | None, int]:
    try:
        thread = (get_config().get("configurable") or {}).get("thread_id")
    except RuntimeError:  # called outside a graph run
        thread = None
    turn = sum(1 for m in state.get("messages", []) if isinstance(m, HumanMessage))
    return thread, turn


@step("recall_memory")
def recall_memory(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """This turn's memories, as records and as the labelled prompt block (`[M1]`, `[M2]`, ...)."""
    ctx = runtime.context
    store = runtime.store
    if store is None or not ctx.setting("memory_enabled", True):
        return {"memories": [], "memory_block": "", "steps": {"recall_memory": {"enabled": False}}}
    info: dict[str, Any] = {"user_id": ctx.user_id}
    try:
        items = recall(store, ctx.user_id, state.get("question", ""), k=int(ctx.setting("memory_k", DEFAULT_K)),
                       profile_k=int(ctx.setting("memory_profile_k", DEFAULT_PROFILE_K)),
                       min_score=float(ctx.setting("memory_min_score", DEFAULT_MIN_SCORE)))
    except Exception as exc:  # the answer goes on without memories
        log.warning("memory recall failed: %s", exc)
        info["error"] = f"{type(exc).__name__}: {exc}"
        items = []
    memories = [memory_record(m) for m in items]
    info["memories"] = [{"n": f"M{i}", **m} for i, m in enumerate(memories, start=1)]
    return {"memories": memories, "memory_block": format_memory_block(memories), "steps": {"recall_memory": info}}


@step("write_memory")
def write_memory(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """After the answer: apply the user's message to long-term memory, and fold old turns into the summary."""
    ctx = runtime.context
    store = runtime.store
    info: dict[str, Any] = {}
    update: dict[str, Any] = {}
    if store is not None and ctx.setting("memory_enabled", True):
        thread, turn = _source(state)
        try:
            info.update(remember_message(store, ctx.user_id, state.get("question", ""), settings=ctx.settings,
                                         chat_model=ctx.chat_model, embed=_embed_for(store, ctx),
                                         thread=thread, turn=turn))
        except Exception as exc:  # the answer is already out; log and keep the thread going
            log.warning("writing memory failed: %s", exc)
            info["error"] = f"{type(exc).__name__}: {exc}"
    try:
        update = maybe_summarise(dict(state), int(ctx.setting("summary_token_budget", DEFAULT_SUMMARY_BUDGET)),
                                 ctx.chat_model)
    except Exception as exc:
        log.warning("thread summary failed: %s", exc)
        info["summary_error"] = f"{type(exc).__name__}: {exc}"
    if update:
        info["summary"] = {"summarised": update["summarised"], "words": len(update["summary"].split())}
    return {**update, "steps": {"write_memory": info}}
