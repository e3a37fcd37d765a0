"""Pieces the pages share: citations with their cited span highlighted, the "how I answered" view, the source
view that reopens a passage in its original document, friendly error text, and sanitised upload names.

Everything a user's file or a model's answer contributes is escaped before it reaches HTML.
"""

from __future__ import annotations

import html
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from core.types import Citation, Hit

MAX_UPLOAD_NAME_BYTES = 200
_FORBIDDEN_IN_NAMES = set('<>:"|?*')
# The scanner skips these (hidden, editor lock and partial-download files); an upload must never look like one.
_IGNORED_PREFIXES = (".", "~$", ".~lock.", ".#", "._")
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp", ".swx", "~")
PASSAGE_WINDOW = 700  # characters of a passage shown under an answer, around the cited span
SOURCE_WINDOW = 6000  # characters of a page or section shown in the source view

CSS = """
<style>
.sb-cite {border: 1px solid rgba(128,128,128,.35); border-radius: .5rem; padding: .55rem .8rem; margin: .35rem 0;}
.sb-cite-head {font-size: .9rem; margin-bottom: .25rem;}
.sb-cite-head .sb-n {font-weight: 700; margin-right: .35rem;}
.sb-cite-head .sb-where {opacity: .75;}
.sb-cite-head a {margin-left: .6rem; white-space: nowrap;}
.sb-cite-text, .sb-source-text {font-size: .9rem; line-height: 1.5; white-space: normal;}
.sb-cite-text mark, .sb-source-text mark {background: #fde68a; color: inherit; padding: 0 .1rem; border-radius: .2rem;}
.sb-source-text .sb-passage {background: rgba(125, 180, 255, .18); border-radius: .2rem;}
.sb-source-text {border-left: 3px solid rgba(125, 180, 255, .6); padding-left: .8rem;}
</style>
"""


def inject_css() -> None:
    """The small stylesheet the citation cards and the source view use (once per page run)."""
    st.markdown(CSS, unsafe_allow_html=True)


# ------------------------------------------------------------------------------------------------ upload names
def safe_upload_name(name: str) -> str:
    """A file name that is safe to create inside the drop folder.

    Browsers send a bare name, but a crafted request can send anything: every directory part is dropped (so
    `../../x` becomes `x`), control and reserved characters go, a leading dot (a hidden file the watcher ignores)
    is removed, and the result is at most 200 bytes with its extension kept.
    """
    name = unicodedata.normalize("NFC", str(name)).replace("\\", "/")
    name = name.rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in _FORBIDDEN_IN_NAMES)
    name = " ".join(name.split())
    while name.startswith(_IGNORED_PREFIXES) or name.startswith(" "):
        name = name.lstrip(". ").removeprefix("~$").removeprefix("#")
    while name.endswith(_IGNORED_SUFFIXES) or name.endswith((" ", ".")):
        for suffix in (*_IGNORED_SUFFIXES, " ", "."):
            name = name.removesuffix(suffix)
    if not name:
        name = "upload"
    if len(name.encode("utf-8")) > MAX_UPLOAD_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and len(ext) <= 10 else ""
        stem = stem if dot and ext else name
        budget = MAX_UPLOAD_NAME_BYTES - len(ext.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .") or "upload"
        name = stem + ext
    return name


# ------------------------------------------------------------------------------------------------ formatting
def fmt_time(value: Any) -> str:
    """A timestamp (epoch seconds, datetime or ISO string) as local `YYYY-MM-DD HH:MM`; blank when unknown."""
    if value in (None, "", 0):
        return ""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M") if value.tzinfo else value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(value)))
    text = str(value)
    try:
        return fmt_time(datetime.fromisoformat(text))
    except ValueError:
        return text


def md_text(text: str) -> str:
    """Model or document text for `st.markdown`: `$` would start LaTeX and a leading `#` a heading."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("<", "&lt;")


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


# ------------------------------------------------------------------------------------------------ citations
def citation_record(c: Citation | Mapping[str, Any]) -> dict[str, Any]:
    """A citation as the dict a persisted answer keeps (see `graphs.nodes.citations.citation_record`)."""
    if isinstance(c, Mapping):
        return dict(c)
    h = c.hit
    return {"n": c.n, "quote": c.quote, "id": h.id, "doc_id": h.doc_id, "chunk_index": h.chunk_index,
            "path": h.path, "title": h.title, "location": h.location, "page": h.page, "start": h.start,
            "end": h.end, "text": h.text}


def hit_record(h: Hit | Mapping[str, Any], n: int) -> dict[str, Any]:
    """A closest-passage hit in the citation record shape (no quote)."""
    if isinstance(h, Mapping):
        return {**h, "n": h.get("n", n)}
    return citation_record(Citation(n=n, hit=h))


def highlight_span(text: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` (a sentence of the passage, maybe cut with "…") sits in `text`; None if it cannot be found."""
    quote = quote.strip().removesuffix("…").strip()
    if not quote or not text:
        return None
    at = text.find(quote)
    if at >= 0:
        return at, at + len(quote)
    # Whitespace may differ (line breaks inside PDF text): match word by word.
    words = [re.escape(w) for w in quote.split()]
    m = re.search(r"\s+".join(words), text)
    return (m.start(), m.end()) if m else None


def source_url(rec: Mapping[str, Any]) -> str:
    """The link that opens a passage in its document (the Library page's source view, in a new tab)."""
    params: dict[str, Any] = {"doc": rec.get("doc_id", ""), "chunk": int(rec.get("chunk_index") or 0)}
    span = highlight_span(str(rec.get("text", "")), str(rec.get("quote", "")))
    if span:
        params["hl"] = f"{span[0]}-{span[1]}"
    # Relative: resolves against the app's own address, whatever host, port or base path it is served under.
    return "library?" + urlencode(params)


def _where(rec: Mapping[str, Any]) -> str:
    page = rec.get("page")
    if page not in (None, ""):
        return f"p. {page}"
    return str(rec.get("location") or "")


def passage_html(text: str, span: tuple[int, int] | None, window: int = PASSAGE_WINDOW) -> str:
    """Escaped passage text with the cited span in `<mark>`, cut to a window around it when long."""
    lo, hi = 0, len(text)
    if len(text) > window:
        centre = (span[0] + span[1]) // 2 if span else 0
        lo = max(0, min(centre - window // 2, len(text) - window))
        hi = lo + window
        if span:  # never cut the cited span itself
            lo, hi = min(lo, span[0]), max(hi, span[1])
    out = "… " if lo > 0 else ""
    if span:
        a, b = span
        out += _esc(text[lo:a]) + "<mark>" + _esc(text[a:b]) + "</mark>" + _esc(text[b:hi])
    else:
        out += _esc(text[lo:hi])
    return out + (" …" if hi < len(text) else "")


def citation_html(rec: Mapping[str, Any], *, label: str | None = None) -> str:
    """One source card: number, file name, page or heading, a link to open it, the passage with the cited span."""
    text = str(rec.get("text", ""))
    span = highlight_span(text, str(rec.get("quote", "")))
    name = Path(str(rec.get("path", ""))).name or str(rec.get("title", "")) or "document"
    where = _where(rec)
    link_text = f"Open at {where}" if where.startswith("p. ") else "Open in document"
    number = label or f"[{rec.get('n', '')}]"
    head = (f'<span class="sb-n">{html.escape(number)}</span>'
            f"<b>{html.escape(name)}</b>"
            + (f' <span class="sb-where">· {html.escape(where)}</span>' if where else "")
            + f' <a href="{html.escape(source_url(rec))}" target="_blank" rel="noopener">{link_text} ↗</a>')
    # No blank line inside: the whole card must stay one HTML block, or markdown would parse the passage.
    return (f'<div class="sb-cite"><div class="sb-cite-head">{head}</div>'
            f'<div class="sb-cite-text">{passage_html(text, span)}</div></div>')


def render_answer(text: str, citations: Sequence[Citation | Mapping[str, Any]], *, covered: bool = True,
                  closest: Sequence[Hit | Mapping[str, Any]] = (), unsupported: Sequence[str] = (),
                  flagged: Sequence[str] = ()) -> None:
    """An answer with its `[n]` markers, one card per cited source, or the closest passages when not covered."""
    st.markdown(md_text(text))
    for s in unsupported:
        st.caption(f":material/warning: Not supported by your notes: {s}")
    if citations:
        st.markdown("**Sources**")
        for c in citations:
            st.markdown(citation_html(citation_record(c)), unsafe_allow_html=True)
    elif not covered and closest:
        st.markdown("**Closest passages in your notes**")
        for i, h in enumerate(closest, start=1):
            st.markdown(citation_html(hit_record(h, i), label="·"), unsafe_allow_html=True)
    if flagged:
        st.caption("Citation check: " + "; ".join(flagged))


# ------------------------------------------------------------------------------------------------ how I answered
def _hits_table(hits: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for rank, h in enumerate(hits, start=1):
        scores = h.get("scores") or {}
        row: dict[str, Any] = {"#": rank, "document": Path(str(h.get("path", ""))).name, "where": h.get("location", "")}
        for stage in ("rerank", "fused", "dense", "bm25"):
            if stage in scores:
                row[stage] = round(float(scores[stage]), 4)
        row["passage"] = h.get("preview", "")
        rows.append(row)
    return rows


def render_steps(steps: Mapping[str, Any], question: str, rewritten: str) -> None:
    """The "how I answered" view: the query searched, hits per stage with scores, timings, model and checks."""
    if rewritten and rewritten != question:
        st.markdown(f"**Searched for:** {md_text(rewritten)}  \n*(your question, made to stand alone)*")
    else:
        st.markdown(f"**Searched for:** {md_text(rewritten or question)}")
    retrieve = steps.get("retrieve") or {}
    queries = retrieve.get("queries") or []
    if len(queries) > 1:
        st.markdown("**Query variants:** " + " · ".join(md_text(q) for q in queries))
    if retrieve.get("hits"):
        st.markdown(f"**Hybrid search** (dense + BM25, fused) — {len(retrieve['hits'])} candidates")
        st.dataframe(_hits_table(retrieve["hits"]), hide_index=True, width="stretch")
    rerank = steps.get("rerank") or {}
    status = str(rerank.get("reranker_status") or steps.get("reranker_status") or "")
    if status:
        st.markdown(f"**Reranker:** {md_text(status)}")
    if rerank.get("hits"):
        st.dataframe(_hits_table(rerank["hits"]), hide_index=True, width="stretch")
    answerability = steps.get("answerability") or {}
    if answerability:
        parts = [f"{k}: {round(v, 3) if isinstance(v, float) else v}" for k, v in answerability.items()
                 if not isinstance(v, dict | list)]
        st.markdown("**Answerability:** " + md_text(", ".join(parts)))
    gen = steps.get("generate") or {}
    llm = steps.get("llm") or gen.get("llm") or {}
    if llm or gen:
        bits = [str(llm.get("model", ""))] if llm.get("model") else []
        if gen.get("ttft") is not None:
            bits.append(f"first token {float(gen['ttft']):.1f} s")
        if gen.get("tokens_per_s"):
            bits.append(f"{float(gen['tokens_per_s']):.1f} tok/s")
        if bits:
            st.markdown("**Model:** " + md_text(" · ".join(bits)))
    timings = {k: v for k, v in (steps.get("timings") or {}).items() if v is not None}
    if timings:
        rows = [{"step": k, "seconds": round(float(v), 3)} for k, v in timings.items()]
        if steps.get("total") is not None:
            rows.append({"step": "total", "seconds": round(float(steps["total"]), 3)})
        st.dataframe(rows, hide_index=True)


# ------------------------------------------------------------------------------------------------ errors
_LLM_ERROR_MODULES = ("openai", "httpx", "httpcore", "graphs.llm_server", "graphs.llm", "core.gguf", "llama_cpp")


def is_llm_error(exc: BaseException | None) -> bool:
    """Whether an answering failure came from reaching or starting the language model."""
    while exc is not None:
        if type(exc).__module__.startswith(_LLM_ERROR_MODULES) or isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def friendly_error(text: str, exc: BaseException | None = None) -> str:
    """What to tell the user when answering failed (no traceback; the log has it)."""
    if is_llm_error(exc):
        return (f"The language model is unavailable, so I cannot answer right now. ({text})  \n"
                "Check the LLM endpoint and model on the **Settings** page and use *Test connection*.")
    return f"Something went wrong while answering: {text}"


# ------------------------------------------------------------------------------------------------ source view
def _section_for(doc: Any, page: int | None, start: int) -> tuple[int, int]:
    """The span of `doc.text` to show: the cited page of a PDF, or the section holding the passage."""
    for sec in doc.sections:
        end = sec.start + len(sec.text)
        if page is not None and sec.page == page:
            return sec.start, end
        if page is None and sec.start <= start < end:
            return sec.start, end
    return max(0, start - SOURCE_WINDOW // 2), min(len(doc.text), start + SOURCE_WINDOW // 2)


def source_html(text: str, passage: tuple[int, int], quote: tuple[int, int] | None) -> str:
    """Escaped page or section text, the passage shaded and the cited span marked inside it."""
    ps, pe = passage
    lo, hi = 0, len(text)
    if len(text) > SOURCE_WINDOW:  # a long section: the window around the passage
        lo = max(0, min(ps - SOURCE_WINDOW // 3, len(text) - SOURCE_WINDOW))
        hi = max(lo + SOURCE_WINDOW, pe)
    qs, qe = quote if quote else (ps, ps)
    body = (_esc(text[lo:ps]) + '<span class="sb-passage" id="cited">' + _esc(text[ps:qs])
            + ("<mark>" + _esc(text[qs:qe]) + "</mark>" if quote else "") + _esc(text[qe:pe]) + "</span>"
            + _esc(text[pe:hi]))
    return ('<div class="sb-source-text">' + ("… " if lo else "") + body + (" …" if hi < len(text) else "")
            + "</div>")


def parse_span(value: str | None) -> tuple[int, int] | None:
    """`"12-80"` → (12, 80); None when absent or malformed."""
    if not value:
        return None
    m = re.fullmatch(r"(\d+)-(\d+)", value.strip())
    if not m or int(m.group(1)) > int(m.group(2)):
        return None
    return int(m.group(1)), int(m.group(2))


def render_source(runtime: Any, doc_id: str, chunk_index: int, hl: tuple[int, int] | None) -> None:
    """Reopen a cited passage in its original document: the page (PDF) or section, the passage marked in it,
    and the original file to download. Only passages in the store can be opened, never an arbitrary path."""
    from app.services import load_original

    inject_css()
    payload = runtime.chunk(doc_id, chunk_index) if doc_id else None
    if payload is None:
        st.warning("This passage is no longer in your library: its document was changed, re-indexed or removed.")
        return
    path = str(payload.get("path", ""))
    hit = Hit.from_payload("", payload)
    name = Path(path).name or hit.title
    row = runtime.ingestor.manifest.get(path)
    st.subheader(f":material/description: {name}")
    where = f"Page {hit.page}" + (f" of {row.pages}" if row and row.pages else "") if hit.page is not None \
        else (" › ".join(hit.heading_path) or "")
    st.caption(" · ".join(x for x in (where, path) if x))

    text = hit.text
    quote = hl if hl and hl[1] <= len(text) else None
    doc = load_original(path, runtime.settings) if row is not None and row.doc_id == doc_id else None
    if doc is not None and doc.text[hit.start:hit.end] == text:
        lo, hi = _section_for(doc, hit.page, hit.start)
        lo, hi = min(lo, hit.start), max(hi, hit.end)
        section = doc.text[lo:hi]
        passage = (hit.start - lo, hit.end - lo)
        q = (passage[0] + quote[0], passage[0] + quote[1]) if quote else None
        st.markdown(source_html(section, passage, q), unsafe_allow_html=True)
    else:
        st.info("The original file has changed since this passage was indexed, or it cannot be opened: "
                "showing the passage as it was indexed.")
        st.markdown(source_html(text, (0, len(text)), quote), unsafe_allow_html=True)

    p = Path(path)
    if p.is_file() and p.stat().st_size <= 200 * 1024 * 1024:
        mime = {".pdf": "application/pdf", ".html": "text/html", ".htm": "text/html", ".md": "text/markdown",
                ".txt": "text/plain",
                ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}.get(
            p.suffix.lower(), "application/octet-stream")
        st.download_button(f"Download the original ({name})", data=p.read_bytes(), file_name=name, mime=mime,
                           key=f"dl-{doc_id}-{chunk_index}")
