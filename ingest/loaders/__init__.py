"""Turn one file into a `core.types.Document`, or raise `IngestError` with a short, human-readable reason.

Files are dispatched by what their bytes are, not by their name: a PDF named `.txt` is read as a PDF (with a
warning), and binary data named `.txt` is refused instead of being indexed as garbage.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from core.types import Document, IngestError
from ingest.loaders.docx import load_docx
from ingest.loaders.html import load_html
from ingest.loaders.markdown import load_markdown
from ingest.loaders.pdf import load_pdf, short_reason
from ingest.loaders.sniff import read_head, sniff
from ingest.loaders.text import binary_error, load_text, named

__all__ = ["SUPPORTED_SUFFIXES", "is_supported", "load_document"]

MB = 1024 * 1024

# What the name promises; the content decides what is actually loaded.
_SUFFIX_KIND: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown", ".mkdn": "markdown",
    ".txt": "text", ".text": "text",
    ".rst": "rst",
    ".html": "html", ".htm": "html", ".xhtml": "html",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_SUFFIX_KIND)
_TEXT_KINDS = frozenset({"markdown", "text", "rst", "html"})
_KIND_LABEL = {"pdf": "a PDF", "docx": "a Word document", "html": "HTML", "text": "plain text"}

# Editor lock files and macOS metadata that sit next to real documents; opening them only yields errors.
_JUNK_PREFIXES = ("~$", "._", ".~lock.")


def is_supported(path: Path) -> bool:
    """Whether the folder scanner should look at this file at all (by suffix, case-insensitive)."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith(_JUNK_PREFIXES)


def _fmt_size(n_bytes: int) -> str:
    mb = n_bytes / MB
    return f"{mb:,.1f} MB" if mb >= 0.1 else f"{n_bytes / 1024:,.1f} KB"


def _unsupported(suffix: str) -> IngestError:
    return IngestError(f"unsupported file type '{suffix}'" if suffix else "unsupported file type (no extension)")


def _text_loader(kind: str) -> Callable[[Path, bytes], Document]:
    if kind == "markdown":
        return load_markdown
    if kind == "html":
        return load_html
    if kind == "rst":
        return partial(load_text, rst=True)
    return load_text


def _read_and_load(text_loader: Callable[[Path, bytes], Document], path: Path) -> Document:
    return text_loader(path, path.read_bytes())


def load_document(path: Path, *, max_file_mb: float = 200, max_docx_uncompressed_mb: float = 300) -> Document:
    """Extract the text and structure of one file.

    Checks, in order: the file exists and is readable, is not empty, is not over `max_file_mb`; then sniffs the
    content and dispatches by what it is. Every failure, expected or not, is an `IngestError` whose message is
    a short reason fit to show the user.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if not path.exists():
            raise IngestError("file not found")
        if not path.is_file():
            raise IngestError("not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise IngestError("empty file (0 bytes)")
        if size > max_file_mb * MB:
            raise IngestError(f"file is {_fmt_size(size)}, over the MAX_FILE_MB limit of {max_file_mb:g} MB")
        head = read_head(path)
        content = sniff(path, head)
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or short_reason(exc)}") from exc
    except IngestError:
        raise
    except Exception as exc:  # sniffing touches damaged files too; it must not leak a traceback either
        raise IngestError(f"could not read the file ({type(exc).__name__}: {short_reason(exc)})") from exc

    wanted = _SUFFIX_KIND.get(suffix)
    warnings: list[str] = []

    def mismatch(kind: str) -> None:
        if wanted != kind and not (kind == "text" and wanted in _TEXT_KINDS):
            warnings.append(f"{named(suffix)} but is {_KIND_LABEL[kind]}")

    loader: Callable[[], Document]
    if content == "pdf":
        mismatch("pdf")
        loader = partial(load_pdf, path)
    elif content == "docx":
        mismatch("docx")
        loader = partial(load_docx, path, max_uncompressed_mb=max_docx_uncompressed_mb)
    elif content in ("zip", "binary"):
        if wanted == "docx" and content == "zip":
            # A damaged zip or a zip without word/document.xml: the DOCX loader names the exact problem.
            loader = partial(load_docx, path, max_uncompressed_mb=max_docx_uncompressed_mb)
        elif wanted in ("docx", "pdf"):
            if head.startswith(b"\xd0\xcf\x11\xe0"):
                raise IngestError(f"legacy Office file (.doc/.xls/.ppt format) {named(suffix)}; "
                                  "save it as .docx or PDF and drop it again")
            raise IngestError(f"corrupt {'DOCX' if wanted == 'docx' else 'PDF'}: the content is not "
                              f"{_KIND_LABEL[wanted]} (unrecognised binary data)")
        elif wanted in _TEXT_KINDS:
            raise binary_error(suffix)
        else:
            raise _unsupported(suffix)
    else:  # html or text
        if wanted in _TEXT_KINDS:
            kind = wanted
        elif wanted in ("pdf", "docx") or content == "html":
            # The content is readable text after all; read it as what it is rather than refuse it.
            mismatch(content)
            kind = content
        else:
            raise _unsupported(suffix)
        loader = partial(_read_and_load, _text_loader(kind), path)

    try:
        doc = loader()
    except IngestError:
        raise
    except MemoryError as exc:
        raise IngestError("ran out of memory while reading the file") from exc
    except RecursionError as exc:
        raise IngestError("could not read the file: its structure is nested too deeply") from exc
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or short_reason(exc)}") from exc
    except Exception as exc:  # last line of defence: never a traceback to the user
        raise IngestError(f"could not read the file ({type(exc).__name__}: {short_reason(exc)})") from exc
    doc.warnings[:0] = warnings
    return doc
