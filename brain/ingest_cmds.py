"""`brain ingest | watch | status | rm | reindex | optimize`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from brain.context import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, backend_or_exit, console, err
from core.settings import get_settings
from ingest.pipeline import FileResult, Ingestor
from ingest.worker import FolderWatcher

STYLE = {"ingested": "green", "unchanged": "dim", "renamed": "cyan", "duplicate": "cyan", "deleted": "yellow",
         "failed": "red"}


def _summary(results: list[FileResult], title: str) -> int:
    """Print one row per file that changed and return the exit code."""
    table = Table(title=title, show_lines=False)
    for col in ("file", "outcome", "chunks", "pages", "seconds", "reason"):
        table.add_column(col, overflow="fold")
    shown = [r for r in results if r.outcome != "unchanged"]
    for r in shown:
        table.add_row(Path(r.path).name, f"[{STYLE.get(r.outcome, '')}]{r.outcome}[/]", str(r.chunks or ""),
                      str(r.pages or ""), f"{r.seconds:.1f}" if r.seconds else "", r.reason)
    if shown:
        console.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to do")
    return EXIT_FAILURES if counts.get("failed") else EXIT_OK


def _progress() -> tuple[Progress, object]:
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[current]}"), console=console, transient=True)
    task = bar.add_task("ingesting", total=None, current="")

    def update(done: int, total: int, result: FileResult | None, current: str) -> None:
        bar.update(task, completed=done, total=total, current=Path(current).name[:50])

    return bar, update


def register(app: typer.Typer) -> None:
    """Add the ingestion commands to the CLI."""

    @app.command()
    def ingest(paths: list[Path] = typer.Argument(..., help="Files or folders to add or update.")) -> None:  # noqa: B008
        """Ingest files and folders (unchanged files are skipped; deleted ones under a folder are removed)."""
        missing = [p for p in paths if not p.exists()]
        if missing:
            err.print(f"[red]✗[/] no such file or folder: {', '.join(map(str, missing))}")
            raise typer.Exit(EXIT_USAGE)
        settings = get_settings()
        with backend_or_exit(settings) as backend:
            ingestor = Ingestor(settings, backend)
            bar, update = _progress()
            with bar:
                results = ingestor.resume(update) + ingestor.sync(paths, update)
        raise typer.Exit(_summary(results, "ingestion"))

    @app.command()
    def watch(folder: Path = typer.Argument(None, help="Drop folder (default: data/inbox).")) -> None:  # noqa: B008
        """Watch a drop folder and keep the library in sync until interrupted."""
        settings = get_settings()
        folder = folder or settings.inbox
        with backend_or_exit(settings) as backend:
            ingestor = Ingestor(settings, backend)
            console.print(f"watching [bold]{folder}[/] (Ctrl-C to stop)")
            watcher = FolderWatcher(ingestor, folder, settings.watch_debounce_ms,
                                    on_batch=lambda rs: _summary(rs, "sync"))
            try:
                watcher.run()
            except KeyboardInterrupt:
                console.print("stopped")

    @app.command()
    def status(all_files: bool = typer.Option(False, "--all", help="List every file, not only failures.")) -> None:
        """Documents, chunks and failures with their reasons."""
        settings = get_settings()
        with backend_or_exit(settings) as backend:
            ingestor = Ingestor(settings, backend)
            s = ingestor.status()
            console.print(f"[bold]{s['documents']}[/] documents, [bold]{s['chunks']}[/] chunks "
                          f"({s['points']} points in {s['backend']} Qdrant), {s['pending']} pending, "
                          f"[red]{s['failed']}[/] failed · model {s['embedding_model']}")
            rows = [r for r in ingestor.manifest.all() if all_files or r.status != "done"]
            if rows:
                table = Table()
                for col in ("file", "status", "chunks", "pages", "reason"):
                    table.add_column(col, overflow="fold")
                for r in rows:
                    table.add_row(r.path, r.status, str(r.chunks or ""), str(r.pages or ""),
                                  r.error or r.warnings or "")
                console.print(table)
        raise typer.Exit(EXIT_FAILURES if s["failed"] else EXIT_OK)

    @app.command()
    def rm(paths: list[Path] = typer.Argument(..., help="Files to remove from the library.")) -> None:  # noqa: B008
        """Remove documents from the library (the files on disk are left alone)."""
        settings = get_settings()
        with backend_or_exit(settings) as backend:
            ingestor = Ingestor(settings, backend)
            results = []
            for p in paths:
                key = str(p.expanduser().resolve())
                rows = ingestor.manifest.under(key) or ([ingestor.manifest.get(key)] if ingestor.manifest.get(key)
                                                       else [])
                if not rows:
                    err.print(f"[yellow]![/] not in the library: {p}")
                results += [ingestor.remove(r.path) for r in rows if r]
        code = _summary(results, "removed")
        raise typer.Exit(code if results else EXIT_FAILURES)

    @app.command()
    def reindex() -> None:
        """Re-embed every document from scratch (after changing the embedding model or chunking)."""
        settings = get_settings()
        with backend_or_exit(settings) as backend:
            ingestor = Ingestor(settings, backend)
            bar, update = _progress()
            with bar:
                results = ingestor.reindex(update)
        raise typer.Exit(_summary(results, "re-index"))
