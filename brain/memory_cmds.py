"""`brain memory list | add | edit | rm | search`: see and correct what the assistant remembers about you."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer
from rich.markup import escape
from rich.table import Table

from brain.context import EXIT_OK, EXIT_USAGE, backend_or_exit, console, err
from core.settings import get_settings
from graphs.memory import MemoryItem, MemoryService

SHORT_ID = 8  # characters of a memory id shown; any unique prefix is accepted back


@contextmanager
def _service() -> Iterator[MemoryService]:
    settings = get_settings()
    with backend_or_exit(settings) as backend:
        service = MemoryService(settings, backend)
        try:
            yield service
        finally:
            service.close()


def _table(items: Sequence[MemoryItem], title: str, show_history: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("id", "kind", "memory", "updated", "from"):
        table.add_column(col, overflow="fold")
    if show_history:
        table.add_column("status")
    for m in items:
        source = f"{m.source_thread or ''}#{m.source_turn}" if m.source_turn is not None else (m.source_thread or "")
        row = [m.id[:SHORT_ID], m.kind, escape(m.text), m.updated_at.strftime("%Y-%m-%d %H:%M"), escape(source)]
        if show_history:
            row.append("current" if m.active else f"replaced by {m.superseded_by[:SHORT_ID]}")  # type: ignore[index]
        table.add_row(*row)
    return table


def _resolve(service: MemoryService, user: str, prefix: str) -> str:
    """The full id of the memory whose id starts with `prefix` (exits when none or several match)."""
    ids = [m.id for m in service.list(user, include_superseded=True) if m.id.startswith(prefix.strip())]
    if len(ids) == 1:
        return ids[0]
    if ids:
        err.print(f"[red]✗[/] {len(ids)} memories have ids starting with {escape(prefix)}; give more characters")
    else:
        err.print(f"[red]✗[/] no memory with id {escape(prefix)}; see `brain memory list --all`")
    raise typer.Exit(EXIT_USAGE)


def register(app: typer.Typer) -> None:
    """Add the `memory` sub-app to the CLI."""
    memory = typer.Typer(no_args_is_help=True, help="See and correct long-term memory.")
    app.add_typer(memory, name="memory")
    user_opt = typer.Option(None, "--user", "-u", help="Whose memories (default: USER_ID).")

    @memory.command("list")
    def list_(all_: bool = typer.Option(False, "--all", "-a", help="Include replaced memories (history)."),
              user: str = user_opt) -> None:
        """What is remembered, newest first."""
        user = user or get_settings().user_id
        with _service() as service:
            items = service.list(user, include_superseded=all_)
        if not items:
            console.print(f"nothing remembered for {escape(user)} yet")
            return
        console.print(_table(items, f"memories of {user}" + (" (with history)" if all_ else ""), show_history=all_))

    @memory.command()
    def add(text: str = typer.Argument(..., help="What to remember, e.g. 'Prefers metric units.'"),
            kind: str = typer.Option("fact", "--kind", "-k", help="preference | fact | project | decision"),
            user: str = user_opt) -> None:
        """Remember something (a near-duplicate of a current memory is merged into it)."""
        user = user or get_settings().user_id
        with _service() as service:
            try:
                item = service.add(user, text, kind)
            except ValueError as exc:
                err.print(f"[red]✗[/] {exc}")
                raise typer.Exit(EXIT_USAGE) from None
        console.print(f"[green]✓[/] remembered [{item.id[:SHORT_ID]}] {escape(item.text)}")

    @memory.command()
    def edit(memory_id: str = typer.Argument(..., help="The memory's id (a unique prefix is enough)."),
             text: str = typer.Argument(None, help="The corrected text (omit to change only the kind)."),
             kind: str = typer.Option(None, "--kind", "-k", help="preference | fact | project | decision"),
             user: str = user_opt) -> None:
        """Correct a memory in place."""
        user = user or get_settings().user_id
        if text is None and kind is None:
            err.print("[red]✗[/] give the new text, --kind, or both")
            raise typer.Exit(EXIT_USAGE)
        with _service() as service:
            full = _resolve(service, user, memory_id)
            try:
                item = service.edit(user, full, text=text, kind=kind)
            except ValueError as exc:
                err.print(f"[red]✗[/] {exc}")
                raise typer.Exit(EXIT_USAGE) from None
        console.print(f"[green]✓[/] [{item.id[:SHORT_ID]}] {item.kind}: {escape(item.text)}")

    @memory.command()
    def rm(memory_id: str = typer.Argument(..., help="The memory's id (a unique prefix is enough)."),
           user: str = user_opt) -> None:
        """Forget a memory for good (with the history it replaced); it is not learned again from chat."""
        user = user or get_settings().user_id
        with _service() as service:
            full = _resolve(service, user, memory_id)
            item = service.get(user, full)
            service.delete(user, full)
        console.print(f"[green]✓[/] forgot [{full[:SHORT_ID]}] {escape(item.text if item else '')}")

    @memory.command()
    def search(query: str = typer.Argument(..., help="What to look for."),
               k: int = typer.Option(5, "--k", help="How many."), user: str = user_opt) -> None:
        """The current memories nearest to a query, with their similarity."""
        user = user or get_settings().user_id
        with _service() as service:
            items = service.search(user, query, k=k)
        table = Table(title=f"memories like {query!r}", title_justify="left")
        for col in ("id", "kind", "memory", "similarity"):
            table.add_column(col, overflow="fold")
        for m in items:
            table.add_row(m.id[:SHORT_ID], m.kind, escape(m.text), f"{m.score or 0:.2f}")
        console.print(table)
        raise typer.Exit(EXIT_OK)
