"""`check_citations`: the checked answer, its sources in citation order, or the 'not covered' reply."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from core.types import Citation, Hit
from graphs.nodes.answerability import CLOSEST_SHOWN
from graphs.nodes.common import hit_summary, step
from graphs.state import NOT_COVERED, AnswerContext, AnswerState

_ECHOED_TAG = re.compile(r"</?passage\b[^>\n]*>", re.IGNORECASE)


def citation_record(c: Citation) -> dict[str, Any]:
    """What a persisted answer keeps of a citation, so a reopened conversation can show and open its sources."""
    h = c.hit
    return {"n": c.n, "quote": c.quote, "id": h.id, "doc_id": h.doc_id, "chunk_index": h.chunk_index,
            "path": h.path, "title": h.title, "location": h.location, "page": h.page, "start": h.start,
            "end": h.end, "text": h.text}


def _closest_records(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [citation_record(Citation(n=i, hit=h)) for i, h in enumerate(hits, start=1)]


@step("check_citations")
def check_citations(state: AnswerState, runtime: Runtime[AnswerContext]) -> dict[str, Any]:
    """Attribute every sentence, repair or drop markers, renumber 1..m; decline when nothing is supported."""
    ctx = runtime.context
    passages = list(state.get("passages", []))
    if not state.get("covered"):
        closest = list(state.get("closest") or state.get("hits", [])[:CLOSEST_SHOWN])
        return _not_covered(closest, reason=state.get("answerability", {}).get("reason", "below the floor"),
                            flagged=[])

    # A small model sometimes echoes the prompt's passage tags; they are markup, not answer text.
    draft = _ECHOED_TAG.sub("", state.get("draft", ""))
    result = ctx.attributor.attribute(draft, passages, n_memories=len(state.get("memories", [])))
    info: dict[str, Any] = {"sentences": result.sentences, "order": [i + 1 for i in result.order]}
    if not result.cited_anything:
        # No sentence is backed by a passage: whatever the model wrote came from elsewhere.
        update = _not_covered(passages[:CLOSEST_SHOWN], reason="no sentence of the draft is supported by a passage",
                              flagged=[*result.flagged, "the model's answer was not supported by the passages"])
        update["steps"]["check_citations"].update(info)
        return update
    message = AIMessage(content=result.text, additional_kwargs={
        "citations": [citation_record(c) for c in result.citations], "covered": True,
        "unsupported": result.unsupported, "flagged": result.flagged,
    })
    info.update(flagged=result.flagged, unsupported=result.unsupported,
                citations=[hit_summary(c.hit, c.n) for c in result.citations])
    return {"answer": result.text, "citations": result.citations, "flagged": result.flagged,
            "unsupported": result.unsupported, "closest": [], "covered": True, "messages": [message],
            "steps": {"check_citations": info}}


def _not_covered(closest: list[Hit], reason: str, flagged: list[str]) -> dict[str, Any]:
    message = AIMessage(content=NOT_COVERED, additional_kwargs={
        "citations": [], "covered": False, "closest": _closest_records(closest)})
    return {"answer": NOT_COVERED, "citations": [], "flagged": flagged, "unsupported": [], "closest": closest,
            "covered": False, "messages": [message],
            "steps": {"check_citations": {"covered": False, "reason": reason,
                                          "closest": [hit_summary(h) for h in closest]}}}
