"""Attribute an answer to its passages after generation, instead of trusting the model's `[n]` markers.

The packaged 1.5B model drops, misnumbers and invents citations. So each sentence of the draft is matched
to the passage that supports it (embedding similarity with the project's embedder plus lexical overlap,
and the cross-encoder when one is loaded); a marker is kept when its passage supports the sentence,
moved to the passage that does, attached where the model left none, and removed (and reported) when it
names no given passage. Sentences no passage supports are reported as unsupported. Finally the markers
are renumbered 1..m in order of first appearance, so the sources list reads in citation order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.encoders import Embedder
from core.types import Citation, Hit
from retrieval.rerank import Reranker

# "[1]", "[1, 2]", "[1][2]", "[Passage 1]", "[source 2]", "[M1]" (memory); full-width brackets too.
_MARKER = re.compile(
    r"[\[【]\s*(?:(?:passage|source|doc(?:ument)?|ref)\s*#?\s*)?"
    r"((?:M\s*)?\d{1,3}(?:\s*(?:,|;|and|&)\s*(?:(?:passage|source)\s*)?(?:M\s*)?\d{1,3})*)\s*[\]】]",
    re.IGNORECASE,
)
_NUM = re.compile(r"(M?)\s*(\d{1,3})", re.IGNORECASE)
_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# A sentence ends at . ! ? (plus any markers right after it) followed by whitespace or the end of the line.
_BOUNDARY = re.compile(r"[.!?](?:\s*[\[【][^\]】\n]{1,24}[\]】])*(?=\s|$)")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "dr", "no", "approx", "fig", "sec"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|\d+(?:\.\d+)*")
_STOP_WORDS = """
a an the and or but if then else of to in on at by for with from as is are was were be been being it its this that
these those there here you your i we our they them their he she his her do does did done can could will would shall
should may might must not no yes so such than too very just also only into out up down over under about above below
what which who whom whose when where why how all any both each few more most other some own same what's it's don't
use used using uses one two has have had having get gets got make makes made like via per e g i etc
tell please hey know want need way thing things explain show give me my python
"""
_STOP = frozenset(_STOP_WORDS.split())

# Phrases that try to steer the model from inside a passage ("ignore previous instructions", "reply only with").
INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b[^.\n]{0,40}\b(instructions?|prompts?|rules?|above|previous)\b"
    r"|\byou are now\b|\bsystem prompt\b|\b(reply|respond|answer|say) only\b|\bnew instructions?\b",
    re.IGNORECASE,
)

MIN_CONTENT_TOKENS = 1  # a fragment with no content word ("1.", "[1][2]", "::") claims nothing and cites nothing


def content_tokens(text: str) -> list[str]:
    """Lower-cased words without stop words, lightly stemmed, with dotted names also split (`os.path` → os, path)."""
    out: list[str] = []
    for m in _WORD.finditer(text):
        word = m.group(0).lower()
        parts = [word, *word.split(".")] if "." in word and not word[0].isdigit() else [word]
        for w in parts:
            if w in _STOP or len(w) < 2:
                continue
            out.append(_stem(w))
    return out


def _stem(word: str) -> str:
    # Enough to match "lists"/"list", "created"/"create"/"creating"; a real stemmer barely changes the decisions.
    for suffix in ("ies", "es", "s", "ed", "ing", "e"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def defang(text: str) -> str:
    """The passage without instructions aimed at the model: from the sentence where one starts to the end of
    its paragraph. An answer that obeys them then finds no support in the passage and is not shown as backed
    by the user's notes."""
    while (m := INJECTION.search(text)) is not None:
        start = max(text.rfind(". ", 0, m.start()) + 1, text.rfind("\n", 0, m.start()) + 1, 0)
        end = text.find("\n\n", m.end())
        text = text[:start] + (text[end:] if end != -1 else "")
    return text


def lexical_support(sentence_tokens: Sequence[str], passage_tokens: set[str]) -> float:
    """Share of the sentence's content words that occur in the passage."""
    if not sentence_tokens:
        return 0.0
    return sum(1 for t in sentence_tokens if t in passage_tokens) / len(sentence_tokens)


def parse_markers(text: str) -> list[tuple[str, int]]:
    """Every citation in `text` as (kind, number): ("p", 2) for [2], ("m", 1) for [M1]."""
    out: list[tuple[str, int]] = []
    for m in _MARKER.finditer(text):
        for kind, num in _NUM.findall(m.group(1)):
            out.append(("m" if kind else "p", int(num)))
    return out


def strip_markers(text: str, masked: str | None = None) -> str:
    """The text without citation markers (and without the space left before punctuation).

    `masked` is the same text with inline code blanked out, so `a[1]` inside backticks is left alone.
    """
    spans: list[tuple[int, int]] = []
    for m in _MARKER.finditer(masked if masked is not None else text):
        # "[1], [2]" is one group: drop the separator with the markers.
        if spans and not text[spans[-1][1]:m.start()].strip(" \t,;"):
            spans[-1] = (spans[-1][0], m.end())
        else:
            spans.append(m.span())
    for start, end in reversed(spans):
        text = text[:start] + text[end:]
    return re.sub(r"[ \t]+([.!?,;:])(?=\s|$)", r"\1", text).rstrip(" \t")


@dataclass
class Segment:
    """A piece of the answer: a sentence to attribute, or verbatim text (code, separators)."""

    text: str
    prose: bool
    markers: list[tuple[str, int]] = field(default_factory=list)
    body: str = ""  # prose without markers
    support: list[float] = field(default_factory=list)  # one score per passage
    cites: list[tuple[str, int]] = field(default_factory=list)  # final markers (passage numbers are 1-based input)
    status: str = ""  # kept | moved | attached | unsupported | neutral | memory


@dataclass
class Attribution:
    """The checked answer and what attribution did to get it."""

    text: str
    citations: list[Citation]
    flagged: list[str]
    unsupported: list[str]
    order: list[int]  # input passage indices (0-based) in citation order
    sentences: list[dict[str, Any]]  # per sentence: text, status, best passage, support scores

    @property
    def cited_anything(self) -> bool:
        """Whether at least one sentence is backed by a passage (and so cites it)."""
        return any(s["status"] in ("kept", "moved", "attached") for s in self.sentences)


def split_segments(text: str) -> list[Segment]:
    """Cut an answer into sentences and verbatim pieces (fenced code, whitespace), keeping every character."""
    segments: list[Segment] = []
    pos = 0
    for fence in _FENCE.finditer(text):
        segments.extend(_split_prose(text[pos:fence.start()]))
        segments.append(Segment(fence.group(0), prose=False))
        pos = fence.end()
    segments.extend(_split_prose(text[pos:]))
    return segments


def _split_prose(text: str) -> list[Segment]:
    out: list[Segment] = []
    for line in re.split(r"(\n+)", text):
        if not line.strip():
            if line:
                out.append(Segment(line, prose=False))
            continue
        # Inline code may hold "a[1]" or "x. y" that must not read as a marker or a sentence end.
        masked = _INLINE_CODE.sub(lambda m: "\0" * len(m.group(0)), line)
        start = 0
        for b in _BOUNDARY.finditer(masked):
            word = re.search(r"([A-Za-z.]+)$", masked[start:b.start()])
            if word and word.group(1).lower().rstrip(".") in _ABBREVIATIONS:
                continue
            out.extend(_sentence(line[start:b.end()], masked[start:b.end()]))
            start = b.end()
        if start < len(line):
            out.extend(_sentence(line[start:], masked[start:]))
    return out


def _sentence(raw: str, masked: str) -> list[Segment]:
    lead = raw[: len(raw) - len(raw.lstrip())]
    out = [Segment(lead, prose=False)] if lead else []
    raw, masked = raw[len(lead):], masked[len(lead):]
    if raw:
        out.append(Segment(raw, prose=True, markers=parse_markers(masked), body=strip_markers(raw, masked)))
    return out


class Attributor:
    """Matches answer sentences to passages and repairs the answer's citations."""

    def __init__(self, embedder: Embedder | None, reranker: Reranker | None = None, *, floor: float = 0.45,
                 margin: float = 0.08, dense_weight: float = 0.5) -> None:
        """`floor`: least support for a sentence to count as backed by a passage; `margin`: how far below the
        best passage a cited one may score and still be kept (the model's own choice wins near-ties)."""
        self.embedder = embedder
        self.reranker = reranker
        self.floor = floor
        self.margin = margin
        self.dense_weight = dense_weight

    def _scores(self, sentences: Sequence[str], passages: Sequence[Hit]) -> np.ndarray:
        """Support matrix [sentence, passage] in 0..1."""
        texts = [defang(p.text) for p in passages]
        ptoks = [set(content_tokens(t + " " + " ".join(p.heading_path))) for t, p in zip(texts, passages, strict=True)]
        lex = np.array([[lexical_support(content_tokens(s), pt) for pt in ptoks] for s in sentences])
        parts = [(1.0 - self.dense_weight, lex)]
        if self.embedder is not None:
            vecs = self.embedder.embed([*sentences, *texts])
            dense = np.clip(vecs[: len(sentences)] @ vecs[len(sentences):].T, 0.0, 1.0)
            parts.append((self.dense_weight, dense))
        if self.reranker is not None and self.reranker.available:
            model = self.reranker._load()
            pairs = [(s, t) for s in sentences for t in texts]
            logits = np.asarray(model.predict(pairs, show_progress_bar=False)).reshape(len(sentences), len(passages))  # type: ignore[attr-defined]
            parts.append((0.5, 1.0 / (1.0 + np.exp(-logits))))
        total = sum(w for w, _ in parts)
        return sum(w * m for w, m in parts) / total  # type: ignore[return-value]

    def attribute(self, draft: str, passages: Sequence[Hit], n_memories: int = 0) -> Attribution:
        """Check and repair the citations of `draft` against `passages` ([1] is `passages[0]`)."""
        segments = split_segments(draft)
        prose = [s for s in segments if s.prose]
        # A question is not a claim: a small model sometimes echoes the user's question back, citation and all.
        scorable = [s for s in prose if len(content_tokens(s.body)) >= MIN_CONTENT_TOKENS and not _is_question(s)]
        if scorable and passages:
            matrix = self._scores([s.body for s in scorable], passages)
            for seg, row in zip(scorable, matrix, strict=True):
                seg.support = [float(x) for x in row]

        _carry_back_markers(prose)
        flagged: list[str] = []
        unsupported: list[str] = []
        for seg in prose:
            self._decide(seg, len(passages), n_memories, flagged, unsupported)

        # Renumber passages 1..m in order of first appearance.
        order: list[int] = []
        for seg in prose:
            for kind, n in seg.cites:
                if kind == "p" and (n - 1) not in order:
                    order.append(n - 1)
        new_n = {idx + 1: i + 1 for i, idx in enumerate(order)}
        text = "".join(_render(seg, new_n) if seg.prose else seg.text for seg in segments)
        citations = [Citation(n=i + 1, hit=passages[idx], quote=_quote(passages[idx], [
            s.body for s in prose if ("p", idx + 1) in s.cites])) for i, idx in enumerate(order)]
        sentences = [{
            "text": seg.body, "status": seg.status,
            "cites": [f"M{n}" if k == "m" else new_n.get(n, n) for k, n in seg.cites],
            "support": [round(x, 3) for x in seg.support],
        } for seg in prose]
        return Attribution(text=text.strip(), citations=citations, flagged=flagged, unsupported=unsupported,
                           order=order, sentences=sentences)

    def _decide(self, seg: Segment, n_passages: int, n_memories: int, flagged: list[str],
                unsupported: list[str]) -> None:
        cited: list[int] = []
        memory: list[int] = []
        for kind, n in seg.markers:
            if kind == "m":
                if 1 <= n <= n_memories:
                    memory.append(n)
                else:
                    flagged.append(f"removed [M{n}]: there is no memory M{n}")
            elif 1 <= n <= n_passages:
                cited.append(n)
            else:
                flagged.append(f"removed [{n}]: there is no passage {n} (only {n_passages} were given)")
        cited = list(dict.fromkeys(cited))
        memory = list(dict.fromkeys(memory))
        seg.cites = [("m", n) for n in memory]

        if _is_question(seg):
            for kind, n in seg.markers:
                if kind == "p":
                    flagged.append(f"removed [{n}] from the question \"{_short(seg.body)}\": a question is not a claim")
            seg.cites = [c for c in seg.cites if c[0] == "m"]
            seg.status = "neutral"
            return
        if not seg.support:  # a fragment without content words (or no passages at all): nothing to back
            seg.status = "memory" if memory else "neutral"
            return
        best = int(np.argmax(seg.support)) + 1
        best_score = seg.support[best - 1]
        short = _short(seg.body)
        kept = [n for n in cited if seg.support[n - 1] >= self.floor and seg.support[n - 1] >= best_score - self.margin]
        if kept:
            seg.cites = [("p", n) for n in kept] + seg.cites
            seg.status = "kept"
            for n in cited:
                if n not in kept:
                    flagged.append(f"removed [{n}] from \"{short}\": passage {n} does not support it")
        elif best_score >= self.floor:
            seg.cites = [("p", best), *seg.cites]
            seg.status = "moved" if cited else "attached"
            for n in cited:
                flagged.append(f"replaced [{n}] with [{best}] on \"{short}\": passage {best} supports it, {n} does not")
        else:
            seg.status = "memory" if memory else "unsupported"
            for n in cited:
                flagged.append(f"removed [{n}] from \"{short}\": no passage supports it")
            if not memory:
                unsupported.append(seg.body)


def _carry_back_markers(prose: Sequence[Segment]) -> None:
    """Give markers that stand alone ("[2]" on its own line after a code block or a paragraph) to the sentence
    before them, which is what the model meant them for."""
    previous: Segment | None = None
    for seg in prose:
        if seg.support or (seg.body.strip() and content_tokens(seg.body)):
            previous = seg
        elif seg.markers and previous is not None:
            previous.markers = [*previous.markers, *(m for m in seg.markers if m not in previous.markers)]
            seg.markers = []


def _render(seg: Segment, new_n: dict[int, int]) -> str:
    body = seg.body
    marks = "".join(f"[M{n}]" if k == "m" else f"[{new_n[n]}]" for k, n in seg.cites)
    if not marks:
        return body
    m = re.search(r"[.!?:;,]+$", body)
    if m:  # "... mutable [2]." reads better than "... mutable. [2]"
        return f"{body[: m.start()].rstrip()} {marks}{body[m.start():]}"
    return f"{body} {marks}"


def _is_question(seg: Segment) -> bool:
    return strip_markers(seg.body).rstrip().endswith("?")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _quote(hit: Hit, sentences: Sequence[str], max_chars: int = 300) -> str:
    """The passage sentence that shares most words with the answer sentences that cite it."""
    want = set(content_tokens(" ".join(sentences)))
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n{2,}", hit.text) if p.strip()]
    if not parts:
        return ""
    best = max(parts, key=lambda p: (sum(1 for t in set(content_tokens(p)) if t in want), -len(p)))
    return best if len(best) <= max_chars else best[: max_chars - 1].rstrip() + "…"

