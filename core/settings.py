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

    # `.env` for secrets and deployment; `data/settings.env` is what the app's Settings page writes (it wins).
    model_config = SettingsConfigDict(env_file=(".env", str(PROJECT_ROOT / "data" / "settings.env")),
                                      env_file_encoding="utf-8", extra="ignore")

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
    # One thread: on 2 cores the LLM server holds the other (DESIGN.md §3); None = torch's default.
    torch_threads: int | None = 1

    # --- retrieval -----------------------------------------------------------------------------
    retrieval_k: int = 8
    prefetch_k: int = 50
    # Tuned on the Python-FAQ set (docs/benchmarks.md): dense 4 : bm25 1 with a sharp RRF (k=2) beats
    # dense alone (nDCG@10 0.717 vs 0.697) where the textbook equal-weight k=60 loses to it.
    rrf_k: int = 2
    dense_weight: float = 4.0
    bm25_weight: float = 1.0
    multi_query_rrf_k: int = Field(default=60, description="RRF k when fusing multi-query variants.")
    fusion: str = Field(default="rrf", description="rrf | dbsf")
    rerank: bool = True
    rerank_candidates: int = 30
    neighbour_expansion: bool = False

    # --- LLM -----------------------------------------------------------------------------------
    llm_base_url: str | None = Field(default=None,
                                     description="OpenAI-compatible endpoint; unset = packaged llama.cpp.")
    llm_model: str = "qwen2.5-coder-1.5b-instruct"
    llm_api_key: str = "sk-local"
    llm_variant: str = Field(default="default", description="default (1.5B) | fast (0.5B)")
    llm_threads: int = 1
    llm_ctx: int = 4096
    llm_port: int = 8765
    llm_max_tokens: int = 200
    llm_temperature: float = 0.1
    multi_query: bool = False

    # --- answering -------------------------------------------------------------------------------
    answer_floor: float = Field(default=0.41, description="Relevance floor below which the notes 'do not cover it'.")
    answer_passages: int = Field(default=4, description="Passages given to the model.")
    answer_context_words: int = Field(default=220, description="Word budget for passages in the prompt.")
    attribution_floor: float = Field(default=0.45, description="Sentence-to-passage support threshold.")

    # --- memory --------------------------------------------------------------------------------
    memory_enabled: bool = Field(default=True, description="Recall and write long-term memories.")
    memory_k: int = Field(default=4, description="Memories relevant to the question, recalled per turn.")
    memory_profile_k: int = Field(default=6, description="Preferences recalled on every turn (always on).")
    memory_min_score: float = Field(default=0.35, description="Least cosine similarity of a recalled memory.")
    memory_dedupe_threshold: float = Field(default=0.95, description="Cosine at which two memories are one.")
    memory_conflict_threshold: float = Field(default=0.85,
                                             description="Cosine at which a newer memory of the same kind "
                                                         "supersedes an older one.")
    memory_extraction: str = Field(default="auto", description="auto | always | off: when the LLM extracts.")
    summary_token_budget: int = Field(default=1500, description="Thread tokens before older turns are summarised.")

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
    def settings_file(self) -> Path:
        """Where the app's Settings page saves overrides (read after `.env`)."""
        return self.data_dir / "settings.env"

    @property
    def manifest_path(self) -> Path:
        """SQLite ingestion manifest and job queue."""
        return self.data_dir / "manifest.sqlite3"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, `.env` and `<data_dir>/settings.env` (the app's saved choices).

    Precedence, highest first: `overrides`, environment variables, `settings.env`, `.env`, defaults.
    """
    base = Settings(**overrides)  # type: ignore[arg-type]
    if base.settings_file.exists():
        return Settings(_env_file=(".env", str(base.settings_file)), **overrides)  # type: ignore[arg-type,call-arg]
    return base


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return load_settings()
