"""The memory extraction prompt with the real packaged LLM through the real llama.cpp server.

Marked `llm` (run with `pytest -m llm`): it needs llama-cpp-python[server] and the packaged model parts. It uses
the default 1.5B model, which extracted both memories with the right kinds where the fast 0.5B one often
mislabelled them (measured while writing the prompt; `MEMORY_LLM_VARIANT=fast` tries the 0.5B one). One model
call: the message goes through `remember_message`, so the JSON-schema grammar path of the packaged server, the
consolidation and the store are all real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.encoders import Embedder
from core.settings import Settings
from graphs.memory import MemoryService, remember_message
from store.factory import Backend

pytestmark = pytest.mark.llm

VARIANT = os.environ.get("MEMORY_LLM_VARIANT", "default")
MODEL = {"fast": "qwen2.5-coder-0.5b-instruct", "default": "qwen2.5-coder-1.5b-instruct"}[VARIANT]


@pytest.fixture(scope="module")
def llm_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for the packaged model on its own port; the server stops after the module."""
    from tests.test_answer_e2e import _llm_available

    data = tmp_path_factory.mktemp("memory-llm") / "data"
    (data / "inbox").mkdir(parents=True)
    settings = Settings(_env_file=None, data_dir=data, llm_variant=VARIANT, llm_model=MODEL, llm_port=8797,
                        cache_dir=Path.home() / ".cache" / "second-brain")
    reason = _llm_available(settings)
    if reason:
        pytest.skip(reason)
    yield settings
    from graphs.llm_server import stop_llm

    stop_llm()


def test_real_llm_extracts_a_fact_and_a_preference(llm_settings: Settings, embedder: Embedder,
                                                   tmp_path: Path) -> None:
    from graphs.llm import make_chat_model

    calls: list[str] = []

    def chat_model():  # the engine's factory: the server starts on first use
        calls.append("model")
        return make_chat_model(llm_settings)

    with Backend(root=tmp_path / "qdrant") as backend:
        service = MemoryService(llm_settings, backend, embedder=embedder)
        # A question never reaches the model (the rules' gate), so it costs no LLM time.
        info = remember_message(service.store, "u", "How do I install frobnicator on Linux?", settings=llm_settings,
                                chat_model=chat_model)
        assert calls == [] and info["outcomes"] == []

        info = remember_message(service.store, "u", "I use R on Windows, and I like answers in bullet points.",
                                settings=llm_settings, chat_model=chat_model)
        assert info["llm"]["method"] == "grammar", info  # the schema went to llama.cpp as a grammar
        assert "error" not in info["llm"], info["llm"]
        memories = service.list("u")
        texts = [m.text.lower() for m in memories]
        assert any(" r " in f" {t} " and "windows" in t for t in texts), info["llm"]
        bullet = [m for m in memories if "bullet" in m.text.lower()]
        assert bullet and bullet[0].kind == "preference", info["llm"]
        assert all(t.startswith("the user") for t in texts), texts
