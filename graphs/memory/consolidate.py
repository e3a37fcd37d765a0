"""Keeping memory clean: near-duplicates merge, newer facts supersede older ones, forgotten things stay gone.

- **Dedupe.** A candidate whose cosine similarity to a current memory is at least `dedupe` (0.95) is the same
  memory said again: the old one is touched (`updated_at`), nothing is added.
- **Supersede.** A candidate replaces a current memory when the extraction names it (`replaces`), when the user
  said "I moved from X to Y" (every memory mentioning X), when both are of the same kind and very similar
  (cosine ≥ `conflict`) without being duplicates, or when the user's words announce a change ("I live in Berlin
  now") and a memory shares a word with the new one at cosine ≥ `CHANGE_CONFLICT`. The old memory is kept as
  history (`superseded_by` = the new id; recall only reads current ones), never deleted.
- **Forget.** "Forget that I use R" deletes every memory about it, with the history it superseded, and leaves a
  tombstone of the *hashed* content words (never the text), so the model cannot extract it again from a later
  message. The user saying "remember …" about it again lifts the tombstone.

Everything goes through the LangGraph store API, so it works on any `BaseStore`; similarities come from the
store's search scores when it gives them (cosine in `QdrantMemoryStore`), otherwise from the embedder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from langgraph.store.base import BaseStore

from graphs.memory.extract import Candidate, third_person
from graphs.memory.models import ACTIVE, MemoryItem, forgotten_namespace, memory_namespace, now_utc

log = logging.getLogger(__name__)

DEFAULT_DEDUPE = 0.95
DEFAULT_CONFLICT = 0.85
DEFAULT_FORGET = 0.8  # cosine at which "forget X" also takes a memory that shares no word with X
# When the user announced a change ("I live in Berlin now"), a memory this similar that shares a word with the
# new one is what changed: "lives in Berlin" ~ "lives in Oslo" is only 0.59 with MiniLM (measured), yet a conflict.
CHANGE_CONFLICT = 0.55
REPLACES_MATCH = 0.6  # the model's `replaces` text is a paraphrase; it must still clearly be about that memory
PAGE = 500

_WORD = re.compile(r"[a-z0-9][a-z0-9+#']*")
_STOP_WORDS = """
a an the and or but of to in on at by for with from as into onto about over is am are was were be been being
that this these those it its i me my mine myself we us our ours you your user user's users their they them
has have had do does did so very really also just now currently actually still please remember forget
"""
_STOP = frozenset(_STOP_WORDS.split())


def memory_tokens(text: str) -> set[str]:
    """Content words of a memory, lightly stemmed ("uses" and "use" agree), single letters kept ("R")."""
    out: set[str] = set()
    for w in _WORD.findall(text.lower().replace("’", "'")):
        w = w.removesuffix("'s")
        if w in _STOP:
            continue
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return out


def hashed(tokens: set[str]) -> list[str]:
    """Tokens as short hashes: a tombstone can match a word without storing it."""
    return sorted(hashlib.sha256(t.encode()).hexdigest()[:16] for t in tokens)


@dataclass
class Outcome:
    """What happened to one candidate or command."""

    action: str  # added | merged | superseded | blocked | forgotten
    item: MemoryItem | None = None
    previous: MemoryItem | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly line for the step details."""
        out: dict[str, Any] = {"action": self.action}
        if self.item is not None:
            out.update(id=self.item.id, text=self.item.text, kind=self.item.kind)
        if self.previous is not None:
            out["previous"] = {"id": self.previous.id, "text": self.previous.text}
        return out


class MemoryWriter:
    """Applies candidates and commands to one store, per user namespace."""

    def __init__(self, store: BaseStore, embed: Callable[[Sequence[str]], np.ndarray] | None = None, *,
                 dedupe: float = DEFAULT_DEDUPE, conflict: float = DEFAULT_CONFLICT,
                 forget: float = DEFAULT_FORGET) -> None:
        """`embed` returns unit-normalised rows; it is only used when the store's search gives no scores."""
        self.store = store
        self.embed = embed
        self.dedupe = dedupe
        self.conflict = conflict
        self.forget_threshold = forget

    # ------------------------------------------------------------------ reading
    def items(self, user_id: str, include_superseded: bool = False) -> list[MemoryItem]:
        """The user's memories, newest first (current ones only unless `include_superseded`)."""
        flt = None if include_superseded else {"status": ACTIVE}
        out: list[MemoryItem] = []
        offset = 0
        while True:
            page = self.store.search(memory_namespace(user_id), filter=flt, limit=PAGE, offset=offset)
            out.extend(MemoryItem.from_item(i) for i in page)
            if len(page) < PAGE:
                break
            offset += PAGE
        out.sort(key=lambda m: m.updated_at, reverse=True)
        return out

    def get(self, user_id: str, memory_id: str) -> MemoryItem | None:
        """One memory by id (None when it is not this user's)."""
        item = self.store.get(memory_namespace(user_id), memory_id)
        return MemoryItem.from_item(item) if item is not None else None

    def similar(self, user_id: str, text: str, k: int = 5, include_superseded: bool = False,
                ) -> list[tuple[MemoryItem, float]]:
        """The memories nearest to `text` with their cosine similarity, most similar first."""
        flt = None if include_superseded else {"status": ACTIVE}
        found = self.store.search(memory_namespace(user_id), query=text, filter=flt, limit=k)
        items = [MemoryItem.from_item(i) for i in found]
        scores = [getattr(i, "score", None) for i in found]
        if items and (any(s is None for s in scores)) and self.embed is not None:
            vecs = self.embed([text, *(m.text for m in items)])
            scores = [float(x) for x in vecs[1:] @ vecs[0]]
        pairs = [(m, float(s or 0.0)) for m, s in zip(items, scores, strict=True)]
        return sorted(pairs, key=lambda p: p[1], reverse=True)

    # ------------------------------------------------------------------ writing
    def _put(self, user_id: str, item: MemoryItem) -> None:
        self.store.put(memory_namespace(user_id), item.id, item.to_value())

    def add(self, user_id: str, text: str, kind: str, thread: str | None = None, turn: int | None = None,
            supersedes: str | None = None) -> MemoryItem:
        """Store a new current memory (no checks)."""
        now = now_utc()
        item = MemoryItem(id=str(uuid.uuid4()), text=text, kind=kind, created_at=now, updated_at=now,  # type: ignore[arg-type]
                          valid_from=now, supersedes=supersedes, source_thread=thread, source_turn=turn)
        self._put(user_id, item)
        return item

    def supersede(self, user_id: str, old: MemoryItem, text: str, kind: str | None = None,
                  thread: str | None = None, turn: int | None = None) -> MemoryItem:
        """Replace `old` with a new memory; `old` stays, marked as superseded by it."""
        new = None
        for other, cos in self.similar(user_id, text, k=3):
            if other.id != old.id and cos >= self.dedupe:  # the new fact is already known: just retire the old
                new = other
                break
        if new is None:
            new = self.add(user_id, text, kind or old.kind, thread, turn, supersedes=old.id)
        old.superseded_by = new.id
        old.updated_at = now_utc()
        self._put(user_id, old)
        return new

    def remember(self, user_id: str, cand: Candidate, thread: str | None = None, turn: int | None = None) -> Outcome:
        """Apply one candidate: blocked (forgotten), merged (duplicate), superseded (conflict) or added."""
        text = " ".join(cand.text.split())
        if not text:
            return Outcome("blocked")
        if cand.explicit:
            self.unforget(user_id, text)
        elif self.is_forgotten(user_id, text):
            return Outcome("blocked", MemoryItem(id="", text=text, kind=cand.kind))  # type: ignore[arg-type]
        near = self.similar(user_id, text, k=5)
        if near and near[0][1] >= self.dedupe:
            same = near[0][0]
            same.updated_at = now_utc()
            self._put(user_id, same)
            return Outcome("merged", same)
        target = self._replaced(user_id, cand.replaces) if cand.replaces else None
        if target is None:
            target = next((m for m, cos in near if m.kind == cand.kind and cos >= self.conflict), None)
        if target is None and cand.change:
            words = memory_tokens(text)
            target = next((m for m, cos in near if cos >= CHANGE_CONFLICT and words & memory_tokens(m.text)
                           and words != memory_tokens(m.text)), None)
        if target is not None:
            return Outcome("superseded", self.supersede(user_id, target, text, cand.kind, thread, turn), target)
        return Outcome("added", self.add(user_id, text, cand.kind, thread, turn))

    def _replaced(self, user_id: str, replaces: str) -> MemoryItem | None:
        want = memory_tokens(replaces)
        for item, cos in self.similar(user_id, replaces, k=5):
            if cos >= REPLACES_MATCH or (want and want <= memory_tokens(item.text)):
                return item
        return None

    def correct(self, user_id: str, old: str, new: str, sentence: str, thread: str | None = None,
                turn: int | None = None) -> list[Outcome]:
        """"I moved from X to Y": every current memory that mentions X is superseded by a copy saying Y."""
        pattern = re.compile(rf"(?<![\w+#]){re.escape(old)}(?![\w+#])", re.IGNORECASE)
        outcomes = []
        mentions = [m for m, _ in self.similar(user_id, old, k=20) if pattern.search(m.text)]
        for item in mentions:
            text = pattern.sub(new, item.text)
            outcomes.append(Outcome("superseded", self.supersede(user_id, item, text, item.kind, thread, turn), item))
        if not outcomes:  # nothing to correct: remember the move itself
            outcomes.append(self.remember(user_id, Candidate(third_person(sentence), "fact", explicit=True),
                                          thread, turn))
        return outcomes

    # ------------------------------------------------------------------ forgetting
    def forget(self, user_id: str, about: str) -> list[MemoryItem]:
        """Delete every memory about `about` (current and history) and keep it from being extracted again."""
        want = memory_tokens(about)
        matches = [m for m, cos in self.similar(user_id, about, k=20, include_superseded=True)
                   if (want and want <= memory_tokens(m.text)) or cos >= self.forget_threshold]
        deleted = self._delete_with_history(user_id, [m.id for m in matches])
        self._tombstone(user_id, want)
        return deleted

    def delete(self, user_id: str, memory_id: str) -> list[MemoryItem]:
        """Delete one memory and the history it superseded; it is not re-extracted later."""
        item = self.get(user_id, memory_id)
        if item is None:
            return []
        deleted = self._delete_with_history(user_id, [memory_id])
        self._tombstone(user_id, memory_tokens(item.text))
        return deleted

    def _delete_with_history(self, user_id: str, ids: Sequence[str]) -> list[MemoryItem]:
        if not ids:
            return []
        every = {m.id: m for m in self.items(user_id, include_superseded=True)}
        doomed: list[str] = []
        todo = list(ids)
        while todo:  # the memory, what it superseded, what that superseded, ...
            mid = todo.pop()
            if mid in doomed or mid not in every:
                continue
            doomed.append(mid)
            todo.extend(m.id for m in every.values() if m.superseded_by == mid)
        ns = memory_namespace(user_id)
        for mid in doomed:
            self.store.delete(ns, mid)
        return [every[mid] for mid in doomed]

    def _tombstone(self, user_id: str, tokens: set[str]) -> None:
        if not tokens:
            return
        self.store.put(forgotten_namespace(user_id), str(uuid.uuid4()),
                       {"tokens": hashed(tokens), "created_at": now_utc().isoformat()}, index=False)

    def _tombstones(self, user_id: str) -> list[Any]:
        return self.store.search(forgotten_namespace(user_id), limit=10_000)

    def is_forgotten(self, user_id: str, text: str) -> bool:
        """Whether `text` says something the user asked to forget (all of a tombstone's words occur in it)."""
        have = set(hashed(memory_tokens(text)))
        return any(set(t.value.get("tokens") or ()) <= have for t in self._tombstones(user_id))

    def unforget(self, user_id: str, text: str) -> None:
        """Lift the tombstones the user's explicit "remember …" overrides."""
        have = set(hashed(memory_tokens(text)))
        for t in self._tombstones(user_id):
            if set(t.value.get("tokens") or ()) <= have:
                self.store.delete(forgotten_namespace(user_id), t.key)
