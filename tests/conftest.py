"""Shared fixtures: real embedder, real stores (Qdrant Edge on disk, qdrant-client in memory)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.encoders import Embedder, get_embedder
from core.settings import Settings
from store.factory import Backend

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real packaged all-MiniLM-L6-v2, loaded once per test session."""
    return get_embedder("packaged:all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while a module runs, restored afterwards.

    On two shared cores, two torch threads next to a busy process made one query embedding 30-80x slower
    (measured 200-490 ms against 6 ms with one thread).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing every store at a fresh temporary data directory."""
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    return Settings(_env_file=None, data_dir=data, cache_dir=Path.home() / ".cache" / "second-brain")


@pytest.fixture(params=["edge", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store test runs against the embedded engine and the qdrant-client code path."""
    b = Backend(root=tmp_path / "qdrant") if request.param == "edge" else Backend(url=":memory:")
    yield b
    b.close()
