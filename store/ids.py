"""Deterministic point ids: the same content always lands on the same points."""

from __future__ import annotations

import uuid

POINT_NAMESPACE = uuid.UUID("6f1c2b1e-5d0a-4a53-9d43-2b6f3c1e8a11")


def point_id(doc_id: str, chunk_index: int) -> str:
    """The id of chunk `chunk_index` of document `doc_id` (re-ingesting overwrites, never duplicates)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}:{chunk_index}"))


def doc_id_for(sha256: str) -> str:
    """Documents are identified by their content hash."""
    return sha256[:32]
