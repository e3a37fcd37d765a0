"""Opening the product's parts for one command: settings, store backend, ingestor."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from core.settings import Settings, get_settings
from store.base import StoreError, StoreLocked
from store.factory import Backend, open_backend

console = Console()
err = Console(stderr=True)

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed (details printed)
EXIT_USAGE = 2
EXIT_STORE = 3  # the store is locked by another process or unreachable


def setup_logging(verbose: bool = False) -> None:
    """Quiet libraries, show our own warnings."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def backend_or_exit(settings: Settings | None = None) -> Iterator[Backend]:
    """The configured backend, or a clear message and exit code 3."""
    settings = settings or get_settings()
    try:
        backend = open_backend(settings)
    except StoreLocked as exc:
        err.print(f"[red]✗[/] {exc}")
        raise typer.Exit(EXIT_STORE) from None
    except StoreError as exc:
        err.print(f"[red]✗[/] {exc}")
        raise typer.Exit(EXIT_STORE) from None
    try:
        yield backend
    except StoreError as exc:
        err.print(f"[red]✗[/] {exc}")
        raise typer.Exit(EXIT_STORE) from None
    finally:
        backend.close()
