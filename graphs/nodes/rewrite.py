"""`rewrite_query`: condense a follow-up into a standalone question; optional multi-query variants."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime

from graphs.attribution import content_tokens, strip_markers
from graphs.nodes.common import message_text, step
from graphs.prompts import REWRITE, VARIANTS, load_prompt
from graphs.state import NOT_COVERED, AnswerContext, AnswerState

log = logging.getLogger(__name__)

HISTORY_TURNS = 3  # older turns rarely change what "it" refers to, and every token costs prefill time
ANSWER_CHARS = 300  # an answer's opening says what it was about
N_VARIANTS = 2


def prior_turns(messages: Sequence[AnyMessage], turns: int = HISTORY_TURNS) -> list[tuple[str, str]]:
    """(role, text) of the conversation before the current question, the last `turns` exchanges."""
    past = list(messages[:-1]) if messages and isinstance(messages[-1], HumanMessage) else list(messages)
    out: list[tuple[str, str]] = []
    for m in past:
        if isinstance(m, HumanMessage):
            out.append(("user", message_text(m)))
        elif isinstance(m, AIMessage):
            text = message_text(m)
            if text.strip() == NOT_COVERED:  # says nothing about the topic
                continue
            text = " ".join(strip_markers(text).split())
            out.append(("assistant", text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "…"))
    # Keep whole exchanges: from the user message that opens the kept window.
    users = [i for i, (role, _) in enumerate(out) if role == "user"]
    start = users[-turns] if len(users) >= turns else 0
    return out[start:]


def has_history(state: AnswerState) -> bool:
    """Whether the thread has an earlier turn to resolve the question against."""
    return bool(prior_turns(state.get("messages", [])))


def clean_question(raw: str, question: str) -> str | None:
    """The model's rewrite as one plain line, or None when it is empty or is an answer rather than a question."""
    for line in raw.strip().splitlines():
        line = re.sub(r"^(standalone question|question|rewritten question)\s*:\s*", "", line.strip(), flags=re.I)
        line = line.strip().strip('"“”\'`').strip()
        if line:
            # A long line that is not a question is the model answering instead of rewriting.
            too_long = len(line) > max(200, 4 * len(question)) or (len(line) > 120 and not line.endswith("?"))
            return None if too_long else line
    return None


# Words that point back into the conversation: a rewrite must replace them with what they refer to.
_REFERS = re.compile(r"\b(it|its|that|this|these|those|them|they|their|there|one|ones|same|above|former|latter)\b"
                     r"|^\s*(and|what about|how about|or)\b", re.IGNORECASE)


def accept_rewrite(rewrite: str, question: str, history: Sequence[tuple[str, str]]) -> bool:
    """Whether a model's rewrite can be trusted: it keeps (nearly all) the user's own words, and when the
    follow-up points back ("it", "that format", "and on Windows?") it brings in a word from the conversation.

    The packaged 0.5B model, measured on the pydocs set, sometimes repeats the previous question instead of the
    follow-up, or copies the follow-up unresolved.
    """
    asked = set(content_tokens(question))
    got = set(content_tokens(rewrite))
    # One word in four may go: "that format" becomes "JSON".
    if len(asked - got) > len(asked) // 4:
        return False
    if _REFERS.search(question) or len(asked) < 3:
        earlier = set(content_tokens(" ".join(t for _, t in history)))
        return bool((got - asked) & earlier)
    return True


# "And when should I water them?" → "when should I water them?": the passages already carry the context.
_LEADING_LINK = re.compile(r"^\s*(and|or|so|but|also)\b[\s,]*", re.IGNORECASE)


def with_previous(history: Sequence[tuple[str, str]], question: str) -> str:
    """Fallback rewrite without the model: the follow-up, then the previous question as context.

    Retrieval gets both sets of words; the follow-up comes first because the answer prompt uses this text as
    the question, and a small model answers whatever is asked first.
    """
    last_user = next((t for r, t in reversed(history) if r == "user"), "")
    return f"{question} (follow-up to: {last_user})" if last_user else question


def _quiet(model: BaseChatModel, max_tokens: int) -> Any:
    # Short, deterministic completions; `extra_body` because llama_cpp.server ignores max_completion_tokens.
    try:
        return model.bind(temperature=0.0, max_tokens=max_tokens, extra_body={"max_tokens": max_tokens})
    except Exception:  # a model class that rejects these kwargs
        return model


@step("rewrite_query")
def rewrite_query(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Resolve a follow-up ("and on Windows?") against the thread's history; add variants when `multi_query`."""
    ctx = runtime.context
    question = state["question"]
    history = prior_turns(state.get("messages", []))
    standalone = question
    info: dict[str, Any] = {"history_turns": sum(1 for r, _ in history if r == "user")}
    if history:
        convo = "\n".join(f"{role}: {text}" for role, text in history)
        if state.get("summary"):  # older turns, folded by graphs/memory/summary.py
            convo = f"(summary of earlier turns) {state['summary']}\n{convo}"
        prompt = load_prompt(REWRITE).render(history=convo, question=question)
        try:
            raw = message_text(_quiet(ctx.chat_model(), 64).invoke(prompt))
            info["raw"] = raw
            rewrite = clean_question(raw, question)
            if rewrite and accept_rewrite(rewrite, question, history):
                standalone = rewrite
            else:  # the model lost the user's words or resolved nothing: search with the previous question added
                standalone = with_previous(history, question)
                info["rejected"] = rewrite
        except Exception as exc:  # no LLM: searching with the previous question as context still helps
            standalone = with_previous(history, question)
            info["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("query rewrite failed (%s); searching with the previous question added", exc)
    queries = [standalone]
    if ctx.settings.multi_query:
        prompt = load_prompt(VARIANTS).render(question=standalone, n=N_VARIANTS)
        try:
            raw = message_text(_quiet(ctx.chat_model(), 96).invoke(prompt))
            variants = [clean_question(line, standalone) or "" for line in raw.splitlines()]
            queries += [v for v in dict.fromkeys(variants) if v and v.lower() != standalone.lower()][:N_VARIANTS]
        except Exception as exc:
            info["variants_error"] = f"{type(exc).__name__}: {exc}"
    info.update(standalone=standalone, queries=queries)
    fell_back = "rejected" in info or "error" in info
    asked = (_LEADING_LINK.sub("", question).strip() or question) if fell_back else standalone
    return {"standalone": standalone, "answer_question": asked[:1].upper() + asked[1:], "queries": queries,
            "steps": {"rewrite_query": info}}
