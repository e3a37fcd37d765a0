"""Long-term memory: the LangGraph store over Qdrant, extraction, consolidation, recall in the real graph.

Real parts: Qdrant (Edge and the qdrant-client path through the `backend` fixture), the packaged embedder,
the compiled answer graph with its SQLite checkpointer. The chat model is a deterministic fake that answers
by what it is asked (memory extraction, thread summary, query rewrite, or an answer that follows the
user's recalled preference), so the extraction logic is tested without an LLM.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from core.encoders import Embedder, get_bm25
from core.settings import Settings
from graphs.engine import AnswerEngine
from graphs.memory import MemoryService, QdrantMemoryStore, recall, remember_message
from graphs.memory.consolidate import memory_tokens
from graphs.memory.extract import extract_with_model, parse_extraction, plan, third_person, worth_extracting
from graphs.memory.models import memory_namespace
from graphs.memory.summary import fallback_summary, maybe_summarise
from retrieval.search import Retriever
from store.factory import Backend
from tests.fixtures_docs import ingest_notes

NOTES = {
    "tea.md": "# Brewing tea\n\nGreen tea should be brewed with water at 80 degrees Celsius for two minutes. "
              "Black tea needs boiling water and four minutes of steeping.\n",
    "install.md": "# Installing frobnicator\n\n## On Linux\n\nInstall frobnicator with the package manager: "
                  "run sudo apt install frobnicator and then frobnicator --init.\n",
}
TEA = "How hot should the water be for green tea?"
PROSE = "Green tea is brewed with water at 80 degrees Celsius for two minutes [1]."
BULLETS = "- Green tea is brewed with water at 80 degrees Celsius [1].\n- Green tea is brewed for two minutes [1]."
SUMMARY = "The user asked several times how hot the water for green tea should be; 80 degrees Celsius."


class ScriptedChat(GenericFakeChatModel):
    """A fake chat model that answers by what it is asked, and records every prompt.

    Extraction prompts get the JSON in `extractions` for the first key found in the message (else no
    memories); answer prompts get bullet points when the prompt's memory block says the user wants them.
    """

    messages: Any = Field(default_factory=lambda: iter(()))
    extractions: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def kinds(self) -> list[str]:
        """What each recorded call was: extract | summary | rewrite | answer."""
        return [_kind(p) for p in self.prompts]

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kw: Any) -> ChatResult:
        self.prompts.append(list(messages))
        user = str(messages[-1].content)
        kind = _kind(messages)
        if kind == "extract":
            said = user.split("Message:", 1)[-1]
            found = next((v for k, v in self.extractions.items() if k.lower() in said.lower()), [])
            text = json.dumps({"memories": found})
        elif kind == "summary":
            text = SUMMARY
        elif kind == "rewrite":
            text = re.search(r"Last message:\s*(.+)", user).group(1)  # type: ignore[union-attr]
        else:
            text = BULLETS if "bullet points" in user else PROSE
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _kind(messages: list[BaseMessage]) -> str:
    system = str(messages[0].content)
    if "worth remembering" in system:
        return "extract"
    if "running summary" in system:
        return "summary"
    if "standalone search question" in system:
        return "rewrite"
    return "answer"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[tuple[Settings, Backend]]:
    """Two notes ingested once into an embedded store; the memories collection sits beside them."""
    root = tmp_path_factory.mktemp("memory")
    settings = Settings(_env_file=None, data_dir=root / "data")
    backend = ingest_notes(settings, root / "notes", NOTES, embedder)
    yield settings, backend
    backend.close()


@pytest.fixture
def make_engine(corpus: tuple[Settings, Backend], embedder: Embedder, tmp_path: Path) -> Iterator[Any]:
    """Engines over the corpus with the memory store the engine builds itself (no `store=` given)."""
    settings, backend = corpus
    engines: list[AnswerEngine] = []

    def build(model: ScriptedChat, **overrides: Any) -> AnswerEngine:
        s = settings.model_copy(update=overrides) if overrides else settings
        chunks = backend.collection(s.collection, embedder.dim, {"embedding_model": embedder.model_id})
        engine = AnswerEngine(s, backend, chat_model=model, retriever=Retriever(s, chunks, embedder, get_bm25()),
                              checkpointer_path=tmp_path / "conversations.sqlite3")
        engines.append(engine)
        return engine

    yield build
    for e in engines:
        e.close()


@pytest.fixture
def service(backend: Backend, settings: Settings, embedder: Embedder) -> MemoryService:
    """A memory service on a fresh store of each kind (Qdrant Edge, qdrant-client)."""
    return MemoryService(settings, backend, embedder=embedder)


def _texts(items: Any) -> list[str]:
    return [m.text for m in items]


def _answer_prompts(model: ScriptedChat) -> list[str]:
    return ["\n".join(str(m.content) for m in p) for p in model.prompts if _kind(p) == "answer"]


# ------------------------------------------------------------------------------------------------ the store
def test_store_put_get_search_delete_and_namespaces(backend: Backend, embedder: Embedder) -> None:
    store = QdrantMemoryStore(backend.collection("memories", embedder.dim, {"embedding_model": embedder.model_id}),
                              embedder)
    ns = ("alice", "memories")
    store.put(ns, "os", {"text": "The user runs Linux on a ThinkPad laptop.", "kind": "fact", "n": 1})
    store.put(ns, "tea", {"text": "The user drinks green tea every morning.", "kind": "preference", "n": 5})
    store.put(ns, "db", {"text": "The team decided to use Postgres for the Atlas project.", "kind": "decision", "n": 9})
    store.put(("alice", "notes", "deep"), "x", {"text": "Nested namespace item."})
    store.put(("alice", "forgotten"), "t", {"tokens": ["abc"]}, index=False)

    first = store.get(ns, "os")
    assert first is not None and first.value["text"].startswith("The user runs Linux") and first.namespace == ns
    time.sleep(0.01)
    store.put(ns, "os", {"text": "The user runs Linux on a Framework laptop.", "kind": "fact", "n": 2})
    again = store.get(ns, "os")
    assert again.value["n"] == 2 and again.created_at == first.created_at and again.updated_at > first.updated_at
    assert store.get(ns, "missing") is None and store.get(("bob", "memories"), "os") is None

    hits = store.search(ns, query="which operating system is on my laptop?", limit=3)
    assert hits[0].key == "os" and hits[0].score is not None and hits[0].score > hits[-1].score
    assert [h.key for h in store.search(ns, query="laptop", filter={"kind": "decision"})] == ["db"]
    assert {h.key for h in store.search(ns, filter={"n": {"$gte": 5}})} == {"tea", "db"}
    assert {h.key for h in store.search(ns, filter={"kind": {"$ne": "fact"}})} == {"tea", "db"}
    assert {h.key for h in store.search(ns, filter={"kind": {"$in": ["fact", "decision"]}})} == {"os", "db"}
    newest = store.search(ns)  # filter-only: newest first, scores absent
    assert newest[0].key == "os" and newest[0].score is None
    assert [h.key for h in store.search(ns, limit=1, offset=1)] == [newest[1].key]
    # The unindexed tombstone is found by namespace, never by a query.
    assert store.search(("alice", "forgotten"), query="abc") == []
    assert [h.key for h in store.search(("alice", "forgotten"))] == ["t"]

    assert store.list_namespaces() == [("alice", "forgotten"), ("alice", "memories"), ("alice", "notes", "deep")]
    assert store.list_namespaces(prefix=("alice", "notes")) == [("alice", "notes", "deep")]
    assert store.list_namespaces(suffix=("memories",)) == [("alice", "memories")]
    assert store.list_namespaces(prefix=("alice", "*"), max_depth=2) == [("alice", "forgotten"), ("alice", "memories"),
                                                                       ("alice", "notes")]

    store.delete(ns, "tea")
    assert store.get(ns, "tea") is None and {h.key for h in store.search(ns)} == {"os", "db"}
    # The async half of the interface runs the same operations.
    assert asyncio.run(store.aget(ns, "db")).value["kind"] == "decision"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ extraction rules
def test_rules_for_commands_and_corrections() -> None:
    p = plan("Remember that I use R on Windows. How do I install packages?")
    assert [c.text for c in p.remember] == ["The user uses R on Windows."] and p.rest == "How do I install packages?"
    assert plan("Forget that I use R.").forget == ["I use R"]
    assert plan("Actually I moved from Windows to Linux.").corrections[0][:2] == ("Windows", "Linux")
    assert plan("I switched from vim to VS Code last week.").corrections[0][:2] == ("vim", "VS Code")
    standing = plan("From now on, answer in bullet points.").remember
    assert standing[0].kind == "preference" and "bullet points" in standing[0].text
    assert third_person("I'm a data engineer and my project is called Atlas") == \
        "The user is a data engineer and the user's project is called Atlas."
    assert worth_extracting("I use R on Windows.") and worth_extracting("I prefer short answers")
    assert not worth_extracting("How do I install frobnicator?") and not worth_extracting("What is BM25?")


def test_model_replies_are_parsed_leniently() -> None:
    assert parse_extraction('```json\n{"memories": [{"text": "Uses R", "kind": "fact"}]}\n```').memories[0].text == \
        "Uses R"
    assert parse_extraction('Sure! [{"text": "Likes tea", "kind": "Preference"}]').memories[0].kind == "preference"
    assert parse_extraction('{"text": "Lives in Oslo", "kind": "unknown"}').memories[0].kind == "fact"
    assert parse_extraction("I could not find anything.").memories == []
    model = ScriptedChat(extractions={"windows": [{"text": "the user uses R on Windows", "kind": "fact"}]})
    extraction, info = extract_with_model(model, "I use R on Windows")
    assert [m.text for m in extraction.memories] == ["The user uses R on Windows."] and info["method"] == "prompt"


# ------------------------------------------------------------------------------------------------ the tests
def test_preference_from_one_conversation_changes_the_form_of_an_answer_in_another(make_engine: Any) -> None:
    model = ScriptedChat(extractions={"bullet points": [
        {"text": "The user prefers answers in bullet points.", "kind": "preference"}]})
    engine = make_engine(model)
    before = engine.ask(TEA, "pref-1", user_id="pat")
    assert before.text == PROSE  # no preference known yet
    engine.ask("I prefer my answers in bullet points.", "pref-1", user_id="pat")
    assert "extract" in model.kinds()
    assert [m.kind for m in engine.memory.list("pat")] == ["preference"]

    after = engine.ask(TEA, "pref-2", user_id="pat")  # a new conversation
    prompt = _answer_prompts(model)[-1]
    assert "[M1] The user prefers answers in bullet points." in prompt
    assert after.covered and after.text.startswith("- ") and after.text.count("\n- ") == 1
    assert after.steps["recall_memory"]["memories"][0]["kind"] == "preference"
    # Somebody else asking the same thing gets prose: memories never cross users.
    other = engine.ask(TEA, "pref-3", user_id="sam")
    assert other.text == PROSE and "[M1]" not in _answer_prompts(model)[-1]


def test_correction_supersedes_the_older_fact_and_history_keeps_both(make_engine: Any) -> None:
    model = ScriptedChat()
    engine = make_engine(model)
    engine.ask("Remember that I use R on Windows.", "os-1", user_id="kim")
    engine.ask("Actually I moved from Windows to Linux.", "os-1", user_id="kim")
    assert "extract" not in model.kinds()  # both are rules: no model call

    memory = engine.memory
    current = memory.list("kim")
    assert _texts(current) == ["The user uses R on Linux."]
    old = memory.history("kim")
    assert _texts(old) == ["The user uses R on Windows."] and old[0].superseded_by == current[0].id
    assert current[0].supersedes == old[0].id and current[0].valid_from > old[0].valid_from
    assert current[0].source_thread == "os-1" and current[0].source_turn == 2
    assert sorted(_texts(memory.list("kim", include_superseded=True))) == ["The user uses R on Linux.",
                                                                         "The user uses R on Windows."]
    recalled = recall(memory.store, "kim", "Which operating system do I use?")
    assert _texts(recalled) == ["The user uses R on Linux."]


def test_model_named_replacement_supersedes_a_dissimilar_fact(service: MemoryService) -> None:
    model = ScriptedChat(extractions={
        "berlin": [{"text": "The user lives in Berlin.", "kind": "fact", "replaces": "The user lives in Oslo."}],
        "oslo": [{"text": "The user lives in Oslo.", "kind": "fact"}],
    })
    s, store = service.settings, service.store
    remember_message(store, "lee", "I live in Oslo.", settings=s, chat_model=lambda: model)
    info = remember_message(store, "lee", "I have moved house, I live in Berlin now.", settings=s,
                            chat_model=lambda: model)
    assert info["outcomes"][0]["action"] == "superseded"  # "Oslo" vs "Berlin" is only 0.6 similar: the hint decided
    assert _texts(service.list("lee")) == ["The user lives in Berlin."]
    assert _texts(service.history("lee")) == ["The user lives in Oslo."]


def test_announced_change_supersedes_without_a_hint(service: MemoryService) -> None:
    model = ScriptedChat(extractions={"berlin": [{"text": "The user lives in Berlin.", "kind": "fact"}],
                                      "oslo": [{"text": "The user lives in Oslo.", "kind": "fact"}],
                                      "coffee": [{"text": "The user likes coffee.", "kind": "preference"}],
                                      "tea": [{"text": "The user likes tea.", "kind": "preference"}]})
    s, store = service.settings, service.store
    for message in ("I live in Oslo.", "I like tea.", "I like coffee too.", "I live in Berlin now."):
        remember_message(store, "max", message, settings=s, chat_model=lambda: model)
    # "now" announced the move; liking coffee as well changed nothing.
    assert sorted(_texts(service.list("max"))) == ["The user likes coffee.", "The user likes tea.",
                                                   "The user lives in Berlin."]
    assert _texts(service.history("max")) == ["The user lives in Oslo."]


def test_near_duplicates_merge(service: MemoryService) -> None:
    model = ScriptedChat(extractions={"windows": [{"text": "User uses R on Windows.", "kind": "fact"}]})
    s, store = service.settings, service.store
    remember_message(store, "ari", "Remember that I use R on Windows.", settings=s, chat_model=lambda: model)
    info = remember_message(store, "ari", "I use R on Windows, by the way.", settings=s, chat_model=lambda: model)
    assert info["outcomes"][0]["action"] == "merged"
    assert _texts(service.list("ari", include_superseded=True)) == ["The user uses R on Windows."]


def test_forget_removes_it_and_it_never_comes_back(make_engine: Any) -> None:
    model = ScriptedChat(extractions={
        "thesis": [{"text": "The user uses R for their thesis.", "kind": "fact"}],
        "windows": [{"text": "The user uses R on Windows.", "kind": "fact"}],
        "tea": [{"text": "The user drinks green tea.", "kind": "preference"}],
    })
    engine = make_engine(model)
    engine.ask("I use R on Windows.", "fg-1", user_id="ola")
    engine.ask("Actually I moved from Windows to Linux.", "fg-1", user_id="ola")
    engine.ask("I drink green tea.", "fg-1", user_id="ola")
    memory = engine.memory
    assert sorted(_texts(memory.list("ola"))) == ["The user drinks green tea.", "The user uses R on Linux."]

    calls = len(model.prompts)
    engine.ask("Forget that I use R.", "fg-1", user_id="ola")
    assert model.kinds()[calls:].count("extract") == 0  # a command: the model never sees it
    assert _texts(memory.list("ola", include_superseded=True)) == ["The user drinks green tea."]  # history too

    # The model extracts it again from a later message: it stays forgotten, in this thread and in a new one.
    engine.ask("I use R for my thesis, it is on Windows.", "fg-2", user_id="ola")
    assert model.kinds().count("extract") >= 3
    assert _texts(memory.list("ola", include_superseded=True)) == ["The user drinks green tea."]
    assert all("R " not in m.text for m in recall(memory.store, "ola", "Which tools do I use for statistics?"))
    answer = engine.ask(TEA, "fg-3", user_id="ola")
    assert [m["text"] for m in answer.steps["recall_memory"]["memories"]] == ["The user drinks green tea."]
    # The tombstone keeps hashes of words, never the forgotten text.
    tomb = memory.store.search(("ola", "forgotten"))
    assert tomb and "R" not in json.dumps([t.value for t in tomb])
    # Only the user saying it again brings it back.
    remember_message(memory.store, "ola", "Remember that I use R on Linux.", settings=memory.settings,
                     chat_model=lambda: model)
    assert "The user uses R on Linux." in _texts(memory.list("ola"))


def test_memories_never_cross_user_namespaces(service: MemoryService) -> None:
    alice = service.add("alice", "The user's cat is called Tom.", "fact")
    service.add("bob", "The user's dog is called Rex.", "fact")
    assert _texts(service.list("alice")) == ["The user's cat is called Tom."]
    assert _texts(service.list("bob")) == ["The user's dog is called Rex."]
    assert _texts(recall(service.store, "bob", "What is my cat called?")) == ["The user's dog is called Rex."]
    assert service.get("bob", alice.id) is None and service.search("bob", "cat Tom")[0].text.endswith("Rex.")
    with pytest.raises(KeyError):
        service.edit("bob", alice.id, text="hijacked")
    with pytest.raises(KeyError):
        service.delete("bob", alice.id)
    service.forget("bob", "my cat")  # bob's forget touches only bob's namespace
    assert _texts(service.list("alice")) == ["The user's cat is called Tom."]
    assert memory_namespace("alice") != memory_namespace("bob")


def test_service_add_edit_delete_search_history(service: MemoryService) -> None:
    item = service.add("eve", "Prefers metric units.", "preference")
    assert item.created_at.tzinfo is not None and item.kind == "preference"
    assert service.add("eve", "Prefers metric units", "preference").id == item.id  # a duplicate merges
    other = service.add("eve", "Works on the Atlas project, a route planner.", "project")
    edited = service.edit("eve", item.id, text="Prefers SI units, never imperial.")
    assert edited.text == "Prefers SI units, never imperial." and edited.updated_at > item.updated_at
    assert service.search("eve", "which units do I like?", k=1)[0].id == item.id
    assert service.edit("eve", other.id, kind="decision").kind == "decision"
    with pytest.raises(ValueError):
        service.add("eve", "   ")
    with pytest.raises(ValueError):
        service.edit("eve", other.id, kind="mood")
    service.delete("eve", item.id)
    assert [m.id for m in service.list("eve")] == [other.id] and service.history("eve") == []
    # Deleted from the UI means forgotten: the extraction model cannot bring it back.
    model = ScriptedChat(extractions={"units": [{"text": "Prefers SI units, never imperial.", "kind": "preference"}]})
    remember_message(service.store, "eve", "I like SI units.", settings=service.settings, chat_model=lambda: model)
    assert [m.id for m in service.list("eve")] == [other.id]


# ------------------------------------------------------------------------------------------------ summaries
def test_long_thread_is_summarised_and_the_summary_reaches_the_rewrite(make_engine: Any) -> None:
    model = ScriptedChat()
    engine = make_engine(model, summary_token_budget=80)
    for _ in range(4):
        engine.ask(TEA, "long-1", user_id="max")
    values = engine.graph.get_state({"configurable": {"thread_id": "long-1"}}).values
    assert values["summary"] == SUMMARY and values["summarised"] >= 2
    assert "summary" in model.kinds()
    engine.ask("and for black tea?", "long-1", user_id="max")
    rewrite = next(p for p in reversed(model.prompts) if _kind(p) == "rewrite")
    assert f"(summary of earlier turns) {SUMMARY}" in str(rewrite[-1].content)
    assert len(engine.history("long-1")) == 10  # the conversation view keeps every message


def test_summary_folds_only_older_turns_and_has_a_fallback() -> None:
    msgs: list[Any] = []
    for i in range(6):
        msgs += [HumanMessage(content=f"question number {i} " * 10), AIMessage(content=f"answer {i} " * 20)]
    assert maybe_summarise({"messages": msgs}, budget=10_000, model=None) == {}
    out = maybe_summarise({"messages": msgs}, budget=50, model=None)  # no model: extractive
    assert out["summarised"] == 6  # the last three exchanges stay verbatim
    assert "question number 0" in out["summary"] and "question number 3" not in out["summary"]
    again = maybe_summarise({"messages": msgs, **out}, budget=50, model=None)
    assert again == {} or again["summarised"] > out["summarised"]

    def broken() -> Any:
        raise RuntimeError("no model")

    assert maybe_summarise({"messages": msgs}, budget=50, model=broken)["summary"]  # falls back
    assert fallback_summary("", [HumanMessage(content="a " * 500)], words=20).count("a") <= 20


def test_engine_exposes_the_memory_service_its_graph_uses(make_engine: Any) -> None:
    engine = make_engine(ScriptedChat())
    assert isinstance(engine.memory, MemoryService)
    engine.memory.add("zoe", "Prefers answers in bullet points.", "preference")
    answer = engine.ask(TEA, "svc-1", user_id="zoe")
    assert answer.text.startswith("- ")  # what the service wrote is what the graph recalled
    assert memory_tokens("The user uses R on Linux.") == {"r", "linux"} | {"use"}


def test_any_langgraph_store_can_hold_the_memories(settings: Settings, embedder: Embedder) -> None:
    from langgraph.store.memory import InMemoryStore

    # Without a semantic index the store gives no scores: similarities come from the embedder instead.
    service = MemoryService(settings, store=InMemoryStore(), embedder=embedder)
    for message in ("Remember that I use R on Windows.", "Actually I moved from Windows to Linux.",
                    "Remember that my cat is called Tom.", "Forget that my cat is called Tom."):
        remember_message(service.store, "u", message, settings=settings, chat_model=None)
    assert _texts(service.list("u")) == ["The user uses R on Linux."]
    assert _texts(service.history("u")) == ["The user uses R on Windows."]
    assert _texts(recall(service.store, "u", "Which operating system do I use?")) == ["The user uses R on Linux."]
