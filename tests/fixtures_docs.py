"""Generators for test documents, written into a tmp dir by each test (nothing binary is committed)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from docx import Document as DocxDocument
from pypdf import PdfReader, PdfWriter

if TYPE_CHECKING:
    from core.encoders import Embedder
    from core.settings import Settings
    from store.factory import Backend


def _pdf_escape(text: str) -> str:
    """Escape a string for a PDF literal string `( ... )`."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _page_stream(text: str) -> bytes:
    """A content stream that shows `text` line by line in 12 pt Helvetica, top left."""
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for i, line in enumerate(text.split("\n")):
        if i:
            ops.append("T*")
        # WinAnsiEncoding covers Latin-1, so accented test text survives the round trip.
        ops.append(f"({_pdf_escape(line)}) Tj")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def make_pdf(path: Path, pages: list[str]) -> Path:
    """Write a minimal, valid PDF with one text page per entry of `pages` (an empty string gives a blank page).

    Hand-written because pypdf cannot lay out text; the xref offsets are computed exactly so strict readers accept it.
    """
    n = len(pages)
    # Object numbers: 1 catalog, 2 pages, 3 font, then per page: page object and its content stream.
    page_ids = [4 + 2 * i for i in range(n)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: ("<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids) + f"] /Count {n} >>").encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for pid, text in zip(page_ids, pages, strict=True):
        stream = _page_stream(text) if text else b""
        objects[pid] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {pid + 1} 0 R >>"
        ).encode()
        objects[pid + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
    path.write_bytes(bytes(out))
    return path


def make_encrypted_pdf(path: Path, pages: list[str], user_password: str = "secret", owner_password: str = "owner",
                       ) -> Path:
    """A text PDF encrypted with RC4-128 (no `cryptography` needed); `user_password=""` opens without a password."""
    plain = make_pdf(path.with_name(path.stem + ".plain.pdf"), pages)
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)
    plain.unlink()
    return path


def make_blank_pdf(path: Path, n_pages: int = 2) -> Path:
    """A PDF whose pages carry no text layer at all, like a scan without OCR."""
    writer = PdfWriter()
    for _ in range(n_pages):
        writer.add_blank_page(width=612, height=792)
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def make_truncated_pdf(path: Path, pages: list[str]) -> Path:
    """A text PDF cut to the first half of its bytes, like an interrupted download or copy."""
    make_pdf(path, pages)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_docx(path: Path) -> Path:
    """A DOCX with a title, nested headings, bullet and numbered lists and a table between paragraphs."""
    doc = DocxDocument()
    doc.add_paragraph("Project Handbook", style="Title")
    doc.add_paragraph("Intro paragraph before any heading level 1.")
    doc.add_heading("Getting started", level=1)
    doc.add_paragraph("Install the tools first.")
    doc.add_paragraph("first bullet", style="List Bullet")
    doc.add_paragraph("second bullet", style="List Bullet")
    doc.add_heading("Requirements", level=2)
    doc.add_paragraph("step one", style="List Number")
    table = doc.add_table(rows=2, cols=3)
    for r, row in enumerate([("Name", "Version", "Notes"), ("python", "3.11", "required")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    doc.add_paragraph("After the table.")
    doc.add_heading("Usage", level=1)
    doc.add_paragraph("Run it.")
    doc.save(str(path))
    return path


def make_empty_docx(path: Path) -> Path:
    """A valid DOCX without any text."""
    DocxDocument().save(str(path))
    return path


def make_zip_bomb_docx(path: Path, member_mb: int = 400) -> Path:
    """A valid DOCX plus a member of `member_mb` MB of zeros, deflated to well under 1 MB on disk.

    Written in streamed chunks so the test neither holds nor writes hundreds of MB.
    """
    base = path.with_name(path.stem + ".base.docx")
    make_docx(base)
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        chunk = bytes(1024 * 1024)
        with dst.open("word/media/padding.bin", "w", force_zip64=True) as member:
            for _ in range(member_mb):
                member.write(chunk)
    base.unlink()
    return path


def make_forged_size_docx(path: Path, claimed_bytes: int) -> Path:
    """A valid DOCX whose central directory claims a member of `claimed_bytes` (the real one is tiny).

    The claim is capped just under 4 GiB, the most the 32-bit size field can say without zip64.

    Proves the guard only reads the central directory: nothing large is ever written or inflated.
    """
    make_docx(path)
    data = bytearray(path.read_bytes())
    # Patch "uncompressed size" (offset 24) of the last central-directory entry; that entry's name is
    # word/... or docProps/..., and a lie there is exactly what a bomb's directory looks like.
    sig = b"PK\x01\x02"
    at = data.rfind(sig)
    data[at + 24: at + 28] = min(claimed_bytes, 0xFFFFFFFE).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def make_zip_without_document(path: Path) -> Path:
    """A plain zip archive (not a Word document)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hello")
    return path


def ingest_notes(settings: Settings, folder: Path, notes: dict[str, str], embedder: Embedder) -> Backend:
    """Write `notes` (file name → text) into `folder` and ingest them into a fresh embedded store.

    Fails the test unless every note is ingested. The caller closes the returned backend.
    """
    from ingest.pipeline import Ingestor
    from store.factory import Backend

    settings.inbox.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in notes.items():
        (folder / name).write_text(text, encoding="utf-8")
    backend = Backend(root=settings.qdrant_path)
    results = Ingestor(settings, backend, embedder=embedder).sync([folder])
    assert all(r.outcome == "ingested" for r in results), results
    return backend
