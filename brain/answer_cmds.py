"""`brain ask | chat` and `brain llm serve`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from brain.context import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, backend_or_exit, console, err
from core.settings import Settings, get_settings
from graphs.engine import Answer, AnswerEngine
from retrieval.filters import SearchFilters

CLI_THREAD = "cli"
FAST_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"


def _filters(folder: Path | None, types: list[str] | None) -> SearchFilters | None:
    if not folder and not types:
        return None
    return SearchFilters(folder=str(folder) if folder else None, file_types=tuple(types or ()))


def _settings(fast: bool) -> Settings:
    settings = get_settings()
    if fast:
        update: dict[str, object] = {"llm_variant": "fast"}
        if settings.llm_model == Settings.model_fields["llm_model"].default:
            update["llm_model"] = FAST_MODEL_NAME  # the alias the server registers, shown with every answer
        settings = settings.model_copy(update=update)
    return settings


def _print_sources(answer: Answer, show_steps: bool) -> None:
    """Sources (only those cited, in citation order), or the closest passages when the notes do not cover it."""
    if answer.citations:
        table = Table(title="sources", show_header=True, title_justify="left")
        for col in ("#", "document", "where", "quote"):
            table.add_column(col, overflow="fold")
        for c in answer.citations:
            table.add_row(str(c.n), escape(c.hit.path), escape(c.hit.location), escape(c.quote))
        console.print(table)
    elif answer.closest:
        table = Table(title="closest passages in your notes", title_justify="left")
        for col in ("document", "where", "score", "text"):
            table.add_column(col, overflow="fold")
        for h in answer.closest:
            preview = " ".join(h.text.split())
            table.add_row(escape(h.path), escape(h.location), f"{h.scores.get('dense', h.score):.2f}",
                          escape(preview[:200] + ("…" if len(preview) > 200 else "")))
        console.print(table)
    for s in answer.unsupported:
        console.print(f"[yellow]![/] not supported by your notes: {escape(s)}")
    for f in answer.flagged:
        console.print(f"[dim]citation check: {escape(f)}[/]")
    timings = answer.steps.get("timings", {})
    gen = answer.steps.get("generate") or {}
    line = " · ".join(f"{k} {v:.2f}s" for k, v in timings.items() if v is not None and v >= 0.01)
    if gen.get("ttft") is not None:
        line += f" · first token {gen['ttft']:.1f}s · {gen.get('tokens_per_s') or 0:.1f} tok/s"
    console.print(f"[dim]{line}[/]")
    if show_steps:
        console.print(answer.steps)


def _answer(engine: AnswerEngine, question: str, thread: str, filters: SearchFilters | None,
            show_steps: bool) -> bool:
    """Stream one answer to the terminal; False when it failed."""
    streamed: list[str] = []
    answer: Answer | None = None
    with console.status("searching your notes…") as status:
        for event in engine.stream(question, thread, filters=filters):
            if event.kind == "step" and event.data.get("status") == "start":
                label = {"rewrite_query": "understanding the follow-up…", "retrieve": "searching your notes…",
                         "rerank": "reranking…", "generate": "starting the model…",
                         "check_citations": "checking citations…"}.get(event.node)
                if label:
                    status.update(label)
            elif event.kind == "token":
                if not streamed:
                    status.stop()
                streamed.append(event.text)
                console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
            elif event.kind == "final":
                answer = event.answer
            elif event.kind == "error":
                status.stop()
                err.print(f"[red]✗[/] {escape(event.text)}")
                return False
    if streamed:
        console.print()
    if answer is None:
        return False
    if answer.rewritten_query != question:
        console.print(f"[dim]searched for: {escape(answer.rewritten_query)}[/]")
    if not streamed or answer.text != "".join(streamed).strip():
        # The checked text differs from the stream (markers repaired, or the draft was not supported).
        if streamed:
            console.print("[dim]— after checking citations:[/]")
        console.print(escape(answer.text))
    _print_sources(answer, show_steps)
    return True


def register(app: typer.Typer) -> None:
    """Add the answer commands and the `llm` sub-app to the CLI."""

    @app.command()
    def ask(
        question: str = typer.Argument(..., help="The question."),
        thread: str = typer.Option(None, "--thread", "-t", help="Continue this conversation (default: a new one)."),
        folder: Path = typer.Option(None, "--folder", help="Only search documents under this folder."),  # noqa: B008
        types: list[str] = typer.Option(None, "--type", help="Only these file types (md, pdf, docx, ...)."),  # noqa: B008
        fast: bool = typer.Option(False, "--fast", help="Use the fast packaged model (0.5B)."),
        steps: bool = typer.Option(False, "--steps", help="Print what every step did."),
    ) -> None:
        """Answer a question from your notes, streamed, with its sources."""
        settings = _settings(fast)
        with backend_or_exit(settings) as backend, AnswerEngine(settings, backend) as engine:
            ok = _answer(engine, question, thread or f"ask-{uuid.uuid4().hex[:8]}", _filters(folder, types), steps)
        raise typer.Exit(EXIT_OK if ok else EXIT_FAILURES)

    @app.command()
    def chat(
        thread: str = typer.Option(None, "--thread", "-t", help="Conversation id to continue (see --list)."),
        list_only: bool = typer.Option(False, "--list", help="List conversations and exit."),
        fast: bool = typer.Option(False, "--fast", help="Use the fast packaged model (0.5B)."),
        steps: bool = typer.Option(False, "--steps", help="Print what every step did."),
    ) -> None:
        """A conversation with your notes (it is kept: continue it later with --thread)."""
        settings = _settings(fast)
        with backend_or_exit(settings) as backend, AnswerEngine(settings, backend) as engine:
            if list_only:
                _list(engine)
                raise typer.Exit(EXIT_OK)
            _chat_loop(engine, thread or f"{CLI_THREAD}-{uuid.uuid4().hex[:8]}", steps)

    llm = typer.Typer(no_args_is_help=True, help="The packaged local LLM server.")

    @llm.command("serve")
    def serve(
        fast: bool = typer.Option(False, "--fast", help="Serve the fast packaged model (0.5B)."),
        port: int = typer.Option(None, "--port", help="Port (default LLM_PORT)."),
        host: str = typer.Option("127.0.0.1", "--host",
                                 help="Interface to listen on (0.0.0.0 inside a container; keep the API key)."),
    ) -> None:
        """Run the packaged llama.cpp OpenAI-compatible server in the foreground (Ctrl-C stops it)."""
        from graphs.llm_server import LlamaServer, LlamaServerError

        settings = _settings(fast)
        if port:
            settings = settings.model_copy(update={"llm_port": port})
        try:
            server = LlamaServer.from_settings(settings, progress=True)
        except Exception as exc:  # a missing model package or a bad digest: the message says what to do
            err.print(f"[red]✗[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_USAGE) from None
        server.host = host
        server.api_key = settings.llm_api_key  # clients use LLM_API_KEY, so this process must expect the same one
        try:
            url = server.start()
        except LlamaServerError as exc:
            err.print(f"[red]✗[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_FAILURES) from None
        console.print(f"serving [bold]{settings.llm_model}[/] ({server.model_path.name}) at [bold]{url}[/]\n"
                      f"point the app at it with LLM_BASE_URL={url} (and the same LLM_API_KEY); log {server.log_path}")
        try:
            while server.is_running:
                time.sleep(1.0)
            err.print(f"[red]✗[/] the server exited; log tail:\n{escape(server.log_tail())}")
            raise typer.Exit(EXIT_FAILURES)
        except KeyboardInterrupt:
            console.print("stopping")
        finally:
            server.stop()

    app.add_typer(llm, name="llm")


def _list(engine: AnswerEngine) -> None:
    rows = engine.conversations()
    if not rows:
        console.print("no conversations yet")
        return
    table = Table()
    for col in ("thread", "title", "turns", "last used"):
        table.add_column(col, overflow="fold")
    for c in rows:
        table.add_row(c["thread_id"], escape(c["title"]), str(c["turns"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(c["updated_at"])))
    console.print(table)


_CHAT_HELP = "/new  /list  /open <thread>  /rename <title>  /delete  /quit"


def _chat_loop(engine: AnswerEngine, thread: str, steps: bool) -> None:
    console.print(f"conversation [bold]{thread}[/] · {_CHAT_HELP}")
    for turn in engine.history(thread):
        who = "you" if turn["role"] == "user" else "brain"
        console.print(f"[bold]{who}:[/] {escape(turn['content'])}")
    while True:
        try:
            line = console.input("[bold]you:[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit", "/q"):
            return
        if command == "/new":
            thread = f"{CLI_THREAD}-{uuid.uuid4().hex[:8]}"
            console.print(f"new conversation [bold]{thread}[/]")
        elif command == "/list":
            _list(engine)
        elif command == "/open" and arg:
            thread = arg.strip()
            for turn in engine.history(thread):
                console.print(f"[bold]{'you' if turn['role'] == 'user' else 'brain'}:[/] {escape(turn['content'])}")
        elif command == "/rename" and arg:
            engine.rename(thread, arg)
        elif command == "/delete":
            engine.delete(thread)
            console.print(f"deleted [bold]{thread}[/]")
            thread = f"{CLI_THREAD}-{uuid.uuid4().hex[:8]}"
        elif command.startswith("/"):
            console.print(_CHAT_HELP)
        else:
            console.print("[bold]brain:[/] ", end="")
            _answer(engine, line, thread, None, steps)
