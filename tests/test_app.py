"""The Streamlit app's page logic through Streamlit's `AppTest`, over the real runtime: Qdrant Edge on disk, the
real embedder and folder watcher, the real LangGraph answer graph and memory service. Only the chat model is a
deterministic fake (injected through `app.services.CHAT_MODEL_FACTORY`).

Each test gets its own data directory (`DATA_DIR`), so each opens a fresh runtime (store, watcher, engine).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from streamlit.testing.v1 import AppTest

from app import components, services
from core.settings import Settings, load_settings
from store.factory import Backend

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
TEA = ("# Brewing tea\n\nGreen tea should be brewed with water at 80 degrees Celsius for two minutes. "
       "Black tea needs boiling water and four minutes of steeping.\n")
REPLY = "Green tea is brewed with water at 80 degrees Celsius for two minutes [1]."


def always(reply: str) -> Callable[[Settings], GenericFakeChatModel]:
    """A chat-model factory whose model streams `reply` to every prompt (deterministic, never runs out)."""
    return lambda settings: GenericFakeChatModel(messages=itertools.cycle([AIMessage(content=reply)]))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory for the app, a quick watcher, the fake model; closes the runtime afterwards."""
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # no stray .env from the working directory
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("WATCH_DEBOUNCE_MS", "200")
    monkeypatch.setenv("MEMORY_EXTRACTION", "off")
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    monkeypatch.setattr(services, "CHAT_MODEL_FACTORY", always(REPLY))
    yield data
    services.shutdown()


def app(page: str | None = None, **query: str) -> AppTest:
    """The app at a page (`views/<name>.py`), run once."""
    at = AppTest.from_file(MAIN, default_timeout=180)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def wait_until(cond: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll `cond` until it is truthy (the watcher ingests in its own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def ready(name: str) -> Callable[[], bool]:
    """Whether the document `name` in the inbox is indexed."""
    def check() -> bool:
        return any(Path(r.path).name == name and r.status == "done" for r in services.get_runtime().documents())
    return check


def _key(path: str) -> str:
    """The Library page's widget key suffix for a document."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]


def texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


# ------------------------------------------------------------------------------------------------ first run
def test_first_run_welcomes_instead_of_an_empty_page(data_dir: Path) -> None:
    at = app()
    assert "Welcome to Second Brain" in texts(at.title)
    assert str(data_dir / "inbox") in texts(at.markdown)  # says where to drop files
    assert at.page_link[0].proto.label == "Go to the Library"

    at.switch_page("views/library.py")
    at.run()
    assert not at.exception
    assert "Your library is empty" in texts(at.info)
    assert at.file_uploader[0].accept_multiple_files


# ------------------------------------------------------------------------------------------------ uploads
@pytest.mark.parametrize(("raw", "safe"), [
    ("../../x", "x"),
    ("../../etc/passwd.md", "passwd.md"),
    ("..\\..\\windows\\evil.pdf", "evil.pdf"),
    ("/abs/path/notes.md", "notes.md"),
    ("..", "upload"),
    ("", "upload"),
    (".hidden.md", "hidden.md"),
    ("~$lock.docx", "lock.docx"),
    ("report.pdf.part", "report.pdf"),
    ("a<b>c:d|e?.txt", "abcde.txt"),
    ("tab\tand\nnewline.md", "tabandnewline.md"),
    ("Ünïcödé notes.md", "Ünïcödé notes.md"),
])
def test_upload_names_are_sanitised(raw: str, safe: str) -> None:
    assert components.safe_upload_name(raw) == safe


def test_long_upload_names_keep_their_extension() -> None:
    name = components.safe_upload_name("é" * 300 + ".docx")
    assert name.endswith(".docx") and len(name.encode("utf-8")) <= components.MAX_UPLOAD_NAME_BYTES


def test_upload_cannot_escape_the_drop_folder_and_gets_indexed(data_dir: Path) -> None:
    at = app("views/library.py")
    at.file_uploader[0].set_value([("../../escape.md", TEA.encode(), "text/markdown"),
                                   ("notes.txt", b"The boiler was serviced in March by Hansen Heating.", "text/plain")])
    at.run()
    assert not at.exception
    assert not (data_dir.parent / "escape.md").exists() and not (data_dir / "escape.md").exists()
    assert (data_dir / "inbox" / "escape.md").read_text(encoding="utf-8") == TEA
    assert "Added 2 files" in texts(at.success)

    wait_until(ready("escape.md"))
    wait_until(ready("notes.txt"))
    at.run()  # the polling fragment runs with the page: both show as ready
    assert not at.exception
    body = texts(at.markdown)
    assert "escape.md" in body and "notes.txt" in body and body.count(":green-badge[ready]") == 2


# ------------------------------------------------------------------------------------------------ library
def test_library_filter_reindex_and_delete(data_dir: Path) -> None:
    at = app("views/library.py")
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    (data_dir / "inbox" / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    wait_until(ready("tea.md"))
    wait_until(lambda: any(r.status == "failed" for r in services.get_runtime().documents()))
    at.run()
    failed = next(r for r in services.get_runtime().documents() if r.status == "failed")
    assert f":material/error: {failed.error}" in texts(at.caption)  # the reason is shown under the failed file

    at.text_input(key="library-search").input("tea").run()
    body = texts(at.markdown)
    assert "tea.md" in body and "broken.pdf" not in body
    at.text_input(key="library-search").input("").run()
    at.radio(key="library-filter").set_value("Failed").run()
    body = texts(at.markdown)
    assert "broken.pdf" in body and "tea.md" not in body
    at.radio(key="library-filter").set_value("All").run()

    runtime = services.get_runtime()
    tea = str((data_dir / "inbox" / "tea.md").resolve())
    version = runtime.ingestor.manifest.get(tea).doc_version
    at.button(key=f"reindex-{_key(tea)}").click().run()
    wait_until(lambda: runtime.ingestor.manifest.get(tea).doc_version > version
               and runtime.ingestor.manifest.get(tea).status == "done")
    assert runtime.ingestor.store.count() > 0

    at.run()  # the tree rendered while the re-index ran may show the row mid-update: render it again
    at.button(key=f"delete-{_key(tea)}").click().run()
    assert "Delete **tea.md** from the library?" in texts(at.warning)
    at.button(key="confirm-delete-yes").click().run()
    assert not at.exception
    assert not (data_dir / "inbox" / "tea.md").exists()  # or the watcher would bring it back
    assert runtime.ingestor.manifest.get(tea).status == "deleted"
    assert runtime.ingestor.store.count() == 0


# ------------------------------------------------------------------------------------------------ chat
def test_chat_streams_a_cited_answer_and_keeps_the_conversation(data_dir: Path) -> None:
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    at = app()
    wait_until(ready("tea.md"))

    at.chat_input[0].set_value("How hot should the water be for green tea?").run()
    assert not at.exception
    body = texts(at.markdown)
    assert REPLY in body
    card = next(m.value for m in at.markdown if 'class="sb-cite"' in str(m.value))
    assert "<b>tea.md</b>" in card
    assert "<mark>Green tea should be brewed with water at 80 degrees Celsius for two minutes.</mark>" in card
    assert 'href="library?doc=' in card and "&amp;hl=" in card
    assert any(e.label == "How I answered" for e in at.expander)
    assert "**Searched for:** How hot should the water be for green tea?" in body
    assert at.dataframe, "hits per stage are shown as tables"

    # the conversation is listed, can be renamed and deleted (persisted through the checkpointer database)
    engine = services.get_runtime().engine
    [conv] = engine.conversations(services.get_runtime().user_id)
    assert conv["title"] == "How hot should the water be for green tea?"
    at.run()
    assert any(b.label == conv["title"] for b in at.sidebar.button)
    assert REPLY in texts(at.markdown)  # reopened from history, with its sources
    assert any('class="sb-cite"' in str(m.value) for m in at.markdown)
    at.sidebar.text_input(key=f"title-{conv['thread_id']}").input("Tea temperatures")
    at.sidebar.button(key="rename-conversation").click().run()
    assert engine.conversations()[0]["title"] == "Tea temperatures"
    assert any(b.label == "Tea temperatures" for b in at.sidebar.button)
    at.sidebar.button(key="delete-conversation").click().run()
    assert not at.exception
    assert engine.conversations() == []
    assert not at.chat_message  # a fresh conversation


def test_a_new_conversation_starts_empty_and_the_old_one_reopens(data_dir: Path) -> None:
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    at = app()
    wait_until(ready("tea.md"))
    at.chat_input[0].set_value("How hot should the water be for green tea?").run()
    at.sidebar.button(key="new-conversation").click().run()
    assert not at.chat_message
    old = services.get_runtime().engine.conversations()[0]["thread_id"]
    at.sidebar.button(key=f"conv-{old}").click().run()
    assert [m.name for m in at.chat_message] == ["user", "assistant"]


def test_citation_opens_the_passage_in_its_document(data_dir: Path) -> None:
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    at = app()
    wait_until(ready("tea.md"))
    at.chat_input[0].set_value("How hot should the water be for green tea?").run()
    card = next(str(m.value) for m in at.markdown if 'class="sb-cite"' in str(m.value))
    url = card.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))

    # the link opens the Library page with these parameters, in a new browser session
    source = AppTest.from_file(MAIN, default_timeout=180)
    source.switch_page("views/library.py")
    for k, v in query.items():
        source.query_params[k] = v
    source.run()
    assert not source.exception
    assert "tea.md" in texts(source.subheader)
    view = next(str(m.value) for m in source.markdown if 'class="sb-source-text"' in str(m.value))
    assert '<span class="sb-passage" id="cited">' in view
    assert "<mark>Green tea should be brewed with water at 80 degrees Celsius for two minutes.</mark>" in view
    assert source.get("download_button"), "the original file can be downloaded"

    source.query_params["doc"] = "0" * 32
    source.run()
    assert "no longer in your library" in texts(source.warning)


def test_not_covered_shows_the_closest_passages(data_dir: Path) -> None:
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    at = app()
    wait_until(ready("tea.md"))
    at.chat_input[0].set_value("What is the capital of Mongolia's second largest province?").run()
    assert not at.exception
    body = texts(at.markdown)
    assert "don't cover" in body
    assert "**Closest passages in your notes**" in body


def test_llm_unavailable_is_a_notice_not_a_crash(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "CHAT_MODEL_FACTORY", None)
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    (data_dir / "inbox" / "tea.md").write_text(TEA, encoding="utf-8")
    at = app()
    wait_until(ready("tea.md"))
    at.chat_input[0].set_value("How hot should the water be for green tea?").run()
    assert not at.exception
    assert "The language model is unavailable" in texts(at.error)
    at.run()
    assert "The language model is unavailable" in texts(at.warning)  # and it stays visible on the page


def test_store_locked_by_another_process_is_explained(data_dir: Path) -> None:
    holder = Backend(root=load_settings().qdrant_path)  # e.g. `brain watch` holds the embedded store
    try:
        at = AppTest.from_file(MAIN, default_timeout=60)
        at.run()
        assert not at.exception
        assert "Your library is open in another process" in texts(at.error)
    finally:
        holder.close()


def test_server_mode_leaves_the_folder_to_the_worker(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", ":memory:")  # qdrant-client's in-memory stand-in for a Qdrant server
    at = app("views/settings.py")
    runtime = services.get_runtime()
    assert not runtime.embedded and runtime.watcher is None  # docker compose runs `brain watch` as its own service
    assert "Qdrant server :memory:" in str(at.dataframe[0].value)


# ------------------------------------------------------------------------------------------------ settings
def test_settings_are_saved_and_applied_without_restart(data_dir: Path) -> None:
    at = app("views/settings.py")
    runtime = services.get_runtime()
    before = runtime.engine
    at.number_input(key="retrieval_k").set_value(5)
    at.toggle(key="multi_query").set_value(True)
    at.text_input(key="reranker_model").input("/nonexistent/cross-encoder")
    at.button(key="FormSubmitter:settings-form-Save").click().run()
    assert not at.exception
    assert "Saved" in texts(at.success)

    lines = (data_dir / "settings.env").read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == ["MULTI_QUERY=true", "RERANKER_MODEL=/nonexistent/cross-encoder", "RETRIEVAL_K=5"]
    assert runtime.settings.retrieval_k == 5 and runtime.settings.multi_query
    assert runtime.engine is not before and runtime.engine.settings.retrieval_k == 5  # applied now
    reloaded = load_settings()  # and on the next start
    assert (reloaded.retrieval_k, reloaded.multi_query, reloaded.reranker_model) == (
        5, True, "/nonexistent/cross-encoder")

    # a second save rewrites the changed line only
    at.number_input(key="retrieval_k").set_value(7)
    at.button(key="FormSubmitter:settings-form-Save").click().run()
    lines = (data_dir / "settings.env").read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == ["MULTI_QUERY=true", "RERANKER_MODEL=/nonexistent/cross-encoder", "RETRIEVAL_K=7"]


def test_connection_test_reports_an_unreachable_endpoint(data_dir: Path) -> None:
    at = app("views/settings.py")
    at.text_input(key="llm_base_url").input("http://127.0.0.1:9/v1")
    at.button(key="FormSubmitter:settings-form-Test connection").click().run()
    assert not at.exception
    assert "Connection failed" in texts(at.error) and "cannot reach" in texts(at.error)
    assert not (data_dir / "settings.env").exists()  # testing saves nothing


def test_settings_file_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "settings.env"
    path.write_text("# mine\nLLM_MODEL=old\nOTHER=1\n", encoding="utf-8")
    services.save_settings_file(path, {"llm_model": "qwen2.5:7b", "llm_base_url": "http://h:1/v1", "rerank": False,
                                       "reranker_model": None})
    assert path.read_text(encoding="utf-8").splitlines() == [
        "# mine", "LLM_MODEL=qwen2.5:7b", "OTHER=1", "LLM_BASE_URL=http://h:1/v1", "RERANK=false", "RERANKER_MODEL="]
    s = Settings(_env_file=str(path))
    assert s.llm_model == "qwen2.5:7b" and s.rerank is False and not s.reranker_model


# ------------------------------------------------------------------------------------------------ memory
def test_memory_page_add_edit_delete_and_history(data_dir: Path) -> None:
    at = app("views/memory.py")
    service = services.get_runtime().memory()
    if service is None:
        assert "not available" in texts(at.info)
        pytest.skip("graphs.memory is not installed")
    user = services.get_runtime().user_id
    assert "Nothing remembered yet" in texts(at.info)

    at.text_input(key="new-memory-text").input("I prefer answers with code examples")
    at.selectbox(key="new-memory-kind").select("preference")
    at.button(key="FormSubmitter:add-memory-Remember").click().run()
    assert not at.exception
    [m] = service.list(user)
    assert (m.text, m.kind) == ("I prefer answers with code examples", "preference")
    assert "I prefer answers with code examples" in texts(at.markdown)
    assert "**preference** · added" in texts(at.caption)

    at.button(key=f"edit-{m.id}").click().run()
    at.text_area(key=f"edit-text-{m.id}").input("I prefer answers with short code examples")
    at.selectbox(key=f"edit-kind-{m.id}").select("decision")
    at.button(key=f"FormSubmitter:edit-form-{m.id}-Save").click().run()
    assert not at.exception
    [m] = service.list(user)
    assert (m.text, m.kind) == ("I prefer answers with short code examples", "decision")

    # a superseded memory is shown as history, with what replaced it
    from graphs.memory.models import MemoryItem, memory_namespace

    old = MemoryItem(id="old-1", text="I use Python 3.10", kind="fact", superseded_by=m.id)
    service.store.put(memory_namespace(user), old.id, old.to_value())
    at.run()
    history = next(e for e in at.expander if e.label.startswith("History"))
    assert "1 replaced memory" in history.label
    assert "~~I use Python 3.10~~" in texts(history.markdown)

    at.button(key=f"forget-{m.id}").click().run()
    assert not at.exception
    assert service.list(user) == []
    assert "Nothing remembered yet" in texts(at.info)
