"""The `brain` command line: ingestion, search, answers, memory and the LLM server."""

from __future__ import annotations

import importlib

import typer

from brain.context import setup_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Second Brain: chat with your documents.")

# Each area registers its own commands; a module that is not there yet simply adds none.
for _module in ("brain.ingest_cmds", "brain.search_cmds", "brain.answer_cmds", "brain.memory_cmds",
                "brain.models_cmds"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    setup_logging(verbose)


if __name__ == "__main__":
    app()
