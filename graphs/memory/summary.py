"""Short-term memory: the thread's last turns verbatim, older turns folded into a rolling summary.

The checkpointer keeps every message (the conversation view shows them all); what grows is the prompt that
resolves follow-ups. Once the turns not yet summarised exceed `summary_token_budget`, everything but the last
`KEEP_TURNS` exchanges is folded into `state["summary"]` (by the chat model, after the answer has streamed),
and `state["summarised"]` records how many messages the summary covers. `rewrite_query` puts the summary above
the verbatim turns, so a long conversation stays within the model's context without losing what was decided.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage

from graphs.nodes.common import message_text
from graphs.prompts import load_prompt

log = logging.getLogger(__name__)

SUMMARY_PROMPT = "thread_summary.v1"
KEEP_TURNS = 3  # as many exchanges as `rewrite_query` shows verbatim
SUMMARY_WORDS = 120
SUMMARY_MAX_TOKENS = 200
TURN_CHARS = 600  # of each older message, for the summariser's prompt


def count_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token for English), good enough for a budget."""
    return len(text) // 4 + 1


def messages_tokens(messages: Sequence[AnyMessage]) -> int:
    """Estimated tokens of a run of messages."""
    return sum(count_tokens(message_text(m)) for m in messages)


def fold_point(messages: Sequence[AnyMessage], start: int, keep_turns: int = KEEP_TURNS) -> int:
    """Index where the verbatim tail begins: the last `keep_turns` user messages from `start` on stay out."""
    users = [i for i in range(start, len(messages)) if isinstance(messages[i], HumanMessage)]
    return users[-keep_turns] if len(users) > keep_turns else start


def render_turns(messages: Sequence[AnyMessage]) -> str:
    """`user: …` / `assistant: …` lines for the summariser."""
    lines = []
    for m in messages:
        role = "user" if isinstance(m, HumanMessage) else "assistant" if isinstance(m, AIMessage) else ""
        if not role:
            continue
        text = " ".join(message_text(m).split())
        lines.append(f"{role}: {text if len(text) <= TURN_CHARS else text[:TURN_CHARS] + '…'}")
    return "\n".join(lines)


def fallback_summary(previous: str, messages: Sequence[AnyMessage], words: int = SUMMARY_WORDS) -> str:
    """Without a model: the earlier summary plus what the user asked, trimmed to the newest `words` words."""
    asked = [" ".join(message_text(m).split()) for m in messages if isinstance(m, HumanMessage)]
    text = " ".join(p for p in (previous.strip(), "The user asked: " + "; ".join(asked) + "." if asked else "") if p)
    tokens = text.split()
    return " ".join(tokens[-words:]) if len(tokens) > words else text


def _clean(raw: str) -> str:
    text = raw.strip()
    for prefix in ("Updated summary:", "Summary:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip()
    words = text.split()
    return " ".join(words[: SUMMARY_WORDS + 40])


def maybe_summarise(state: dict[str, Any], budget: int, model: Callable[[], BaseChatModel] | None,
                    ) -> dict[str, Any]:
    """`{"summary", "summarised"}` when the unsummarised turns exceed `budget` tokens, else `{}`.

    Never raises: a failing model gives the extractive fallback, so the thread still shrinks.
    """
    messages: list[AnyMessage] = list(state.get("messages") or [])
    start = int(state.get("summarised") or 0)
    if start > len(messages):  # the thread was edited or replaced: start over
        start = 0
    if budget <= 0 or messages_tokens(messages[start:]) <= budget:
        return {}
    cut = fold_point(messages, start)
    if cut <= start:
        return {}
    older = messages[start:cut]
    previous = str(state.get("summary") or "")
    summary = ""
    if model is not None:
        prompt = load_prompt(SUMMARY_PROMPT).render(summary=previous or "(none yet)", turns=render_turns(older))
        try:
            llm = model()
            with contextlib.suppress(Exception):  # a model class that rejects these kwargs keeps its defaults
                llm = llm.bind(temperature=0.0, max_tokens=SUMMARY_MAX_TOKENS,  # type: ignore[assignment]
                               extra_body={"max_tokens": SUMMARY_MAX_TOKENS})
            summary = _clean(message_text(llm.invoke(prompt)))
        except Exception as exc:
            log.warning("thread summary by the model failed (%s); keeping an extractive one", exc)
    if not summary:
        summary = fallback_summary(previous, older)
    return {"summary": summary, "summarised": cut}
