"""`brain search "query"`: the ranked hits with their score at every stage (dense, BM25, fused, rerank)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from brain.context import EXIT_FAILURES, EXIT_OK, backend_or_exit, console, err
from core.encoders import get_bm25, get_embedder
from core.settings import Settings, get_settings
from core.types import Hit
from retrieval.filters import SearchFilters
from retrieval.search import Retriever, SearchResult
from store.factory import Backend

SNIPPET_CHARS = 220


def run_search(settings: Settings, backend: Backend, query: str, k: int, filters: SearchFilters | None,
               rerank: bool) -> SearchResult | None:
    """Search the chunks collection; None when the library is empty (nothing was ever ingested)."""
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    store = backend.collection(settings.collection, embedder.dim, {"embedding_model": embedder.model_id})
    if store.count() == 0:
        return None
    retriever = Retriever(settings, store, embedder, get_bm25())
    return retriever.search(query, filters=filters, k=k, rerank=rerank, stage_scores=True)


def hit_json(rank: int, h: Hit) -> dict[str, Any]:
    """One hit as JSON: where it is, its text and every stage score."""
    return {"rank": rank, "id": h.id, "doc_id": h.doc_id, "path": h.path, "title": h.title, "file_type": h.file_type,
            "page": h.page, "heading_path": list(h.heading_path), "location": h.location, "chunk_index": h.chunk_index,
            "start": h.start, "end": h.end, "score": h.score, "scores": h.scores, "text": h.text}


def _score(h: Hit, stage: str) -> str:
    if stage not in h.scores:
        return "—"
    rank = h.scores.get(f"{stage}_rank")
    return f"{h.scores[stage]:.3f}" + (f" (#{rank:.0f})" if rank is not None else "")


def print_hits(query: str, result: SearchResult) -> None:
    """A table of hits with stage scores, then timings and the reranker's status."""
    reranked = any("rerank" in h.scores for h in result.hits)
    table = Table(title=f"“{query}”", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("source", overflow="fold", max_width=40)
    cols = ["fused", "dense", "bm25"] + (["rerank"] if reranked else [])
    for c in cols:
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("passage", overflow="fold")
    for i, h in enumerate(result.hits, start=1):
        where = f"[bold]{h.title or Path(h.path).name}[/]\n[dim]{h.path}[/]" + (f"\n{h.location}" if h.location else "")
        snippet = " ".join(h.text.split())
        snippet = snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else "")
        table.add_row(str(i), where, *(_score(h, c) for c in cols), snippet)
    console.print(table)
    unavailable = result.reranker_status.startswith("unavailable")
    # the reranker's own log line already says why it is off; the footer only says that it is
    timings = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in result.timings.items()
                        if not (k == "rerank" and unavailable))
    note = " · [yellow]reranker off[/] (fused order)" if unavailable else ""
    console.print(f"[dim]{len(result.hits)} of {result.candidates} candidates · {timings}[/]{note}")


def register(app: typer.Typer) -> None:
    """Add `brain search` to the CLI."""

    @app.command()
    def search(
        query: str = typer.Argument(..., help="What to look for."),
        k: int = typer.Option(None, "--k", "-k", min=1, help="Number of hits (default: RETRIEVAL_K)."),
        folder: Path = typer.Option(None, "--folder", help="Only documents under this folder."),  # noqa: B008
        file_type: list[str] = typer.Option(None, "--type", help="Only these file types (pdf, md, docx, …)."),  # noqa: B008
        no_rerank: bool = typer.Option(False, "--no-rerank", help="Keep the fused order (skip the cross-encoder)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Search the library and show the ranked passages with their scores at every stage."""
        # transformers' "Loading weights" bar would land in the output of a one-shot command (and in --json pipes)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        settings = get_settings()
        filters = SearchFilters(folder=str(folder) if folder else None, file_types=tuple(file_type or ()))
        with backend_or_exit(settings) as backend:
            result = run_search(settings, backend, query, k or settings.retrieval_k,
                                filters if filters.to_filter() else None, rerank=settings.rerank and not no_rerank)
        if result is None:
            err.print("[yellow]![/] the library is empty: add documents with `brain ingest PATH`")
            raise typer.Exit(EXIT_FAILURES)
        if as_json:
            typer.echo(json.dumps({"query": query, "timings": result.timings, "reranker": result.reranker_status,
                                   "candidates": result.candidates,
                                   "hits": [hit_json(i, h) for i, h in enumerate(result.hits, start=1)]}, indent=2))
        elif result.hits:
            print_hits(query, result)
        else:
            console.print("no matching passages" + (" with these filters" if filters.to_filter() else ""))
        raise typer.Exit(EXIT_OK if result.hits else EXIT_FAILURES)
