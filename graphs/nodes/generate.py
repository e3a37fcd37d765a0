"""`generate`: the answer from numbered passages, streamed token by token to the caller."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime

from core.types import Hit
from graphs.attribution import INJECTION, content_tokens
from graphs.nodes.common import message_text, step
from graphs.prompts import ANSWER, load_prompt
from graphs.state import AnswerContext, AnswerState

DEFAULT_CONTEXT_WORDS = 220  # 360 → 220: TTFT 6.6 → 4.2 s (0.5B), more citations correct (docs "Answers")


def source_label(hit: Hit) -> str:
    """A short source id for a passage: file name plus page or heading."""
    name = hit.path.rsplit("/", 1)[-1] or hit.title or hit.doc_id
    return f"{name} › {hit.location}" if hit.location else name


def _quoted(text: str) -> str:
    # A passage must not be able to close its own tag and speak outside it.
    return re.sub(r"</?\s*passage", lambda m: m.group(0).replace("<", "‹"), text.strip(), flags=re.IGNORECASE)


def _units(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text` (a paragraph break always ends one), in order."""
    spans = []
    for para in re.finditer(r"\S(?:.|\n(?!\s*\n))*", text):
        start = para.start()
        for m in re.finditer(r"(?<=[.!?:])\s+", para.group(0)):
            spans.append((start, para.start() + m.start()))
            start = para.start() + m.end()
        spans.append((start, para.end()))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def focus(text: str, query: str, max_words: int) -> str:
    """The part of a passage most about the query, at most `max_words` words.

    Prompt length is what the CPU model pays for first (prefill ~100 tok/s for the 0.5B model, ~55 words/s
    for the 1.5B), so each passage is cut to the window of sentences around the one sharing most words with
    the question. The full passage is still what citations open and what attribution checks.
    """
    text = text.strip()
    if len(text.split()) <= max_words:
        return text
    units = _units(text)
    want = set(content_tokens(query))
    scores = [len(want & set(content_tokens(text[a:b]))) for a, b in units]
    lo = hi = max(range(len(units)), key=lambda i: scores[i])
    words = len(text[units[lo][0]:units[lo][1]].split())
    while True:
        # Grow towards the more relevant neighbour; ties go forward, since what follows a heading or a
        # definition usually holds the details.
        options = [i for i in (hi + 1, lo - 1) if 0 <= i < len(units)]
        if not options:
            break
        nxt = max(options, key=lambda i: (scores[i], i > hi))
        size = len(text[units[nxt][0]:units[nxt][1]].split())
        if words + size > max_words:
            break
        words += size
        lo, hi = min(lo, nxt), max(hi, nxt)
    if words == len(text[units[lo][0]:units[lo][1]].split()) and words > max_words:
        return " ".join(text[units[lo][0]:units[lo][1]].split()[:max_words]) + " …"
    out = text[units[lo][0]:units[hi][1]]
    return ("… " if lo > 0 else "") + out + (" …" if hi < len(units) - 1 else "")


def format_passages(passages: Sequence[Hit], query: str = "", max_words: int | None = None) -> str:
    """Numbered passages as quoted data with their source ids (each cut to `max_words` around the query)."""
    blocks = []
    for n, hit in enumerate(passages, start=1):
        source = _quoted(source_label(hit)).replace('"', "'")
        body = focus(hit.text, query, max_words) if max_words else hit.text
        blocks.append(f'<passage n="{n}" source="{source}">\n{_quoted(body)}\n</passage>')
    return "\n\n".join(blocks)


def suspicious(passages: Sequence[Hit]) -> list[int]:
    """Numbers of passages that contain instruction-like text aimed at the model."""
    return [n for n, h in enumerate(passages, start=1) if INJECTION.search(h.text)]


def answer_messages(state: AnswerState, context_words: int | None = DEFAULT_CONTEXT_WORDS) -> list[BaseMessage]:
    """The chat messages for the answer: rules first (a fixed prefix the server can cache), data, question.

    `context_words` is the passages' total word budget, shared equally (None: whole passages).
    """
    passages = state.get("passages", [])
    question = state.get("answer_question") or state.get("standalone") or state["question"]
    per = max(40, context_words // max(1, len(passages))) if context_words else None
    return load_prompt(ANSWER).render(
        passages=format_passages(passages, question, per),
        memory_block=state.get("memory_block", ""),
        question=question,
    )


@step("generate")
def generate(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Stream the model's answer; each text chunk goes to the caller as it arrives."""
    ctx = runtime.context
    write = runtime.stream_writer
    messages = answer_messages(state, ctx.setting("answer_context_words", DEFAULT_CONTEXT_WORDS))
    model = ctx.chat_model()
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    chunks = 0
    usage: dict[str, Any] = {}
    for chunk in model.stream(messages):
        text = message_text(chunk)
        if getattr(chunk, "usage_metadata", None):
            usage = dict(chunk.usage_metadata)  # type: ignore[arg-type]
        if not text:
            continue
        if first is None:
            first = time.perf_counter()
        chunks += 1
        parts.append(text)
        write({"type": "token", "text": text})
    ended = time.perf_counter()
    draft = "".join(parts)
    tokens = int(usage.get("output_tokens") or chunks)  # llama.cpp streams one token per chunk
    decode_s = ended - first if first is not None else 0.0
    info = {
        "ttft": round(first - started, 4) if first is not None else None,
        "total": round(ended - started, 4),
        "tokens": tokens,
        "tokens_per_s": round((tokens - 1) / decode_s, 2) if decode_s > 0 and tokens > 1 else None,
        "prompt_chars": sum(len(message_text(m)) for m in messages),
        "suspicious_passages": suspicious(state.get("passages", [])),
        "llm": ctx.llm_info() if ctx.llm_info else {},
        "draft": draft,  # what the model wrote, before the citation check (for the "how I answered" view)
    }
    if usage:
        info["usage"] = usage
    return {"draft": draft, "steps": {"generate": info}}
