"""Which files in a folder are documents worth looking at."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

# Editors and browsers leave these behind while a file is being written or is open.
_TEMP_PREFIXES = ("~$", ".~lock.", ".#")
_TEMP_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp", ".swx", "~")


def is_ignored(path: Path) -> bool:
    """Hidden files, editor lock files and half-downloaded files are never documents."""
    name = path.name
    return name.startswith(".") or name.startswith(_TEMP_PREFIXES) or name.endswith(_TEMP_SUFFIXES)


def walk(roots: Iterable[Path]) -> Iterator[Path]:
    """Every non-ignored regular file under the given files and folders, in a stable order."""
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            if not is_ignored(root):
                yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if not is_ignored(p) and p.is_file():
                    yield p


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Content hash, streamed so a huge file never sits in memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
