"""One settings class for the whole product, read from the environment and `.env`.

Every default runs offline on a laptop: embedded Qdrant Edge under `data/qdrant`, the packaged
MiniLM embedder, the packaged GGUF model served by llama.cpp.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All tunables. Environment variables use the upper-case field name (e.g. `QDRANT_URL`)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Root of local stores.")
    inbox_dir: Path | None = Field(default=None, description="Drop folder; default <data_dir>/inbox.")
    cache_dir: Path | None = Field(default=None, description="Assembled models; default ~/.cache/second-brain.")

    # --- vector store --------------------------------------------------------------------------
    qdrant_url: str | None = Field(default=None, description="Qdrant server; unset = embedded Qdrant Edge.")
    qdrant_api_key: str | None = None
    collection: str = "chunks"
    memory_collection: str = "memories"

    # --- ingestion -----------------------------------------------------------------------------
    max_file_mb: float = 200.0
    max_docx_uncompressed_mb: float = 300.0
    chunk_tokens: int = 256
    chunk_overlap: float = 0.15
    embed_batch_size: int = 32
    watch_debounce_ms: int = 1500

    # --- models --------------------------------------------------------------------------------
    embedding_model: str = Field(default="packaged:all-MiniLM-L6-v2",
                                 description="sentence-transformers name, local path or packaged:<name>.")
    reranker_model: str | None = Field(default=None, description="CrossEncoder name or local path.")
    torch_threads: int | None = None

    # --- retrieval -----------------------------------------------------------------------------
    retrieval_k: int = 8
    prefetch_k: int = 50
    rrf_k: int = 60
    dense_weight: float = 3.0
    bm25_weight: float = 1.0
    fusion: str = Field(default="rrf", description="rrf | dbsf")
    rerank: bool = True
    rerank_candidates: int = 30
    neighbour_expansion: bool = False

    # --- LLM -----------------------------------------------------------------------------------
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; unset = packaged llama.cpp.")
    llm_model: str = "qwen2.5-coder-1.5b-instruct"
    llm_api_key: str = "sk-local"
    llm_variant: str = Field(default="default", description="default (1.5B) | fast (0.5B)")
    llm_threads: int = 1
    llm_ctx: int = 4096
    llm_port: int = 8765
    llm_max_tokens: int = 200
    llm_temperature: float = 0.1
    multi_query: bool = False

    # --- app -----------------------------------------------------------------------------------
    user_id: str = "default"
    app_host: str = "127.0.0.1"
    app_port: int = 8501
    database_url: str | None = Field(default=None, description="Postgres for checkpoints/memory; unset = SQLite.")

    @property
    def inbox(self) -> Path:
        """The drop folder."""
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def cache(self) -> Path:
        """Where packaged models are assembled once."""
        return self.cache_dir or Path.home() / ".cache" / "second-brain"

    @property
    def qdrant_path(self) -> Path:
        """Embedded store directory."""
        return self.data_dir / "qdrant"

    @property
    def manifest_path(self) -> Path:
        """SQLite ingestion manifest and job queue."""
        return self.data_dir / "manifest.sqlite3"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()
