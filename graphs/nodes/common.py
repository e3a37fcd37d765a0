"""Helpers shared by the nodes: timing and step events, hit summaries for the "how I answered" view."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime

from core.types import Hit
from graphs.state import AnswerContext, AnswerState

Node = Callable[[AnswerState, Runtime[AnswerContext]], dict[str, Any]]


def step(name: str) -> Callable[[Node], Node]:
    """Wrap a node so it announces itself on the custom stream and records its wall time in `steps[name]`.

    A node returns its update with `steps={name: {...details...}}`; `seconds` is added here.
    """

    def decorate(fn: Node) -> Node:
        @functools.wraps(fn)
        def node(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
            write = runtime.stream_writer
            write({"type": "step", "node": name, "status": "start"})
            started = time.perf_counter()
            update = dict(fn(state, runtime) or {})
            seconds = round(time.perf_counter() - started, 4)
            details = dict((update.get("steps") or {}).get(name, {}))
            details["seconds"] = seconds
            update["steps"] = {**(update.get("steps") or {}), name: details}
            write({"type": "step", "node": name, "status": "done", "seconds": seconds})
            return update

        return node

    return decorate


def hit_summary(hit: Hit, n: int | None = None) -> dict[str, Any]:
    """A JSON-friendly view of a hit: where it is and its score at every stage."""
    out: dict[str, Any] = {
        "id": hit.id, "doc_id": hit.doc_id, "path": hit.path, "title": hit.title, "location": hit.location,
        "chunk_index": hit.chunk_index, "scores": {k: round(v, 4) for k, v in hit.scores.items()},
        "preview": " ".join(hit.text.split())[:160],
    }
    if n is not None:
        out["n"] = n
    return out


def message_text(message: BaseMessage | Any) -> str:
    """The plain text of a message or chunk (content may be a list of parts)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    return str(content or "")
