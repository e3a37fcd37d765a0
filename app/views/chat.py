"""Chat: conversations in the sidebar, answers streamed as they are written, checked citations that open the
exact passage, and a "how I answered" view of the graph's steps."""

from __future__ import annotations

import time
import uuid
from typing import Any

import streamlit as st

from app import components as ui
from app.services import get_runtime

STEP_LABELS = {
    "recall_memory": "Remembering what I know about you…",
    "rewrite_query": "Understanding the follow-up…",
    "retrieve": "Searching your notes…",
    "rerank": "Reranking the passages…",
    "assess": "Checking the notes cover it…",
    "generate": "Writing the answer…",
    "check_citations": "Checking every citation…",
    "write_memory": "Saving what to remember…",
}

runtime = get_runtime()
engine = runtime.engine
user = runtime.user_id
ui.inject_css()
state = st.session_state
state.setdefault("steps", {})


def _new_thread() -> None:
    state.thread_id = f"chat-{uuid.uuid4().hex[:12]}"


def _open_thread(thread_id: str) -> None:
    state.thread_id = thread_id


if "thread_id" not in state:
    _new_thread()
thread: str = state.thread_id

# ------------------------------------------------------------------------------------------------ sidebar
with st.sidebar:
    st.button("New conversation", icon=":material/add:", on_click=_new_thread, width="stretch", key="new-conversation")
    # Filled at the end of the run, so a conversation started by this run's question is already listed.
    conversation_box = st.container()
    st.divider()
    llm = runtime.llm_status
    st.caption(f"LLM: {engine.settings.llm_model} — {llm}")
    if runtime.reranker_status:
        st.caption(f"Reranker: {runtime.reranker_status}")


def render_conversations() -> None:
    """The conversation list, with rename and delete for the open one (persisted in the checkpointer DB)."""
    conversations = engine.conversations(user)
    with conversation_box:
        if conversations:
            st.caption("Conversations")
        for c in conversations[:100]:
            st.button(c["title"] or "Untitled", key=f"conv-{c['thread_id']}", on_click=_open_thread,
                      args=(c["thread_id"],), width="stretch",
                      type="primary" if c["thread_id"] == thread else "secondary")
        current = next((c for c in conversations if c["thread_id"] == thread), None)
        if current is None:
            return
        with st.expander("This conversation"):
            title = st.text_input("Title", value=current["title"], key=f"title-{thread}", max_chars=200)
            cols = st.columns(2)
            if cols[0].button("Rename", key="rename-conversation", width="stretch") and title.strip():
                engine.rename(thread, title.strip())
                st.rerun()
            if cols[1].button("Delete", key="delete-conversation", width="stretch"):
                engine.delete(thread)
                _new_thread()
                st.toast("Conversation deleted")
                st.rerun()


# ------------------------------------------------------------------------------------------------ notices
documents = [r for r in runtime.documents() if r.status == "done"]
if not documents and not engine.conversations(user):
    st.title(":material/psychology: Welcome to Second Brain")
    st.markdown(
        "Ask questions about your own documents and get answers with sources you can check.\n\n"
        f"**Start by adding documents:** drop PDF, Word, Markdown, text or HTML files into "
        f"`{runtime.inbox}` — they are picked up automatically — or upload them on the Library page."
    )
    st.page_link("views/library.py", label="Go to the Library", icon=":material/library_books:")
elif not documents:
    st.info("Your library has no ready documents yet: add some on the Library page.", icon=":material/library_books:")

if llm.startswith("unavailable"):
    st.warning(f"**The language model is unavailable** ({llm.removeprefix('unavailable: ')}). Questions will fail "
               "until it is fixed: check the LLM endpoint and model on the Settings page.", icon=":material/warning:")
elif llm == "starting":
    st.caption(":material/hourglass_top: The language model is starting; the first answer may take a little longer.")
if runtime.reranker_status.startswith("unavailable") and engine.settings.rerank and not state.get("rerank_noted"):
    state.rerank_noted = True
    st.info(f"Reranking is unavailable ({runtime.reranker_status.removeprefix('unavailable: ')}); "
            "answers use the hybrid search order.", icon=":material/info:")


# ------------------------------------------------------------------------------------------------ history
def _steps_key(index: int) -> str:
    return f"{thread}:{index}"


def _render_steps(index: int) -> None:
    saved = state.steps.get(_steps_key(index))
    if saved:
        with st.expander("How I answered"):
            ui.render_steps(saved["steps"], saved["question"], saved["rewritten"])


history = engine.history(thread)
for i, message in enumerate(history):
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(ui.md_text(message["content"]))
        else:
            ui.render_answer(message["content"], message.get("citations", []), covered=message.get("covered", True),
                             closest=message.get("closest", []), unsupported=message.get("unsupported", []),
                             flagged=message.get("flagged", []))
            _render_steps(i)


# ------------------------------------------------------------------------------------------------ answering
def answer(question: str) -> None:
    """Stream one answer into the current chat message, then show the checked text and its sources."""
    status = st.status("Searching your notes…", expanded=False)
    body = st.empty()
    result: dict[str, Any] = {}
    started = time.perf_counter()

    def tokens() -> Any:
        # Iterates to the very end: `write_memory` runs after the final event.
        for event in engine.stream(question, thread, user_id=user):
            if event.kind == "step":
                if event.data.get("status") == "start" and event.node in STEP_LABELS:
                    status.update(label=STEP_LABELS[event.node])
                elif event.data.get("status") == "done":
                    status.write(f"✓ {event.node.replace('_', ' ')} · {float(event.data.get('seconds') or 0):.2f} s")
            elif event.kind == "token":
                yield event.text
            elif event.kind == "final":
                result["answer"] = event.answer
                status.update(label="Checking done — saving what to remember…")
            elif event.kind == "error":
                result["error"] = event

    with body.container(key="streaming"):  # the key marks the live text (the browser test watches it stream)
        st.write_stream(tokens())
    seconds = time.perf_counter() - started
    with body.container():
        if "answer" in result:
            a = result["answer"]
            status.update(label=f"Answered in {seconds:.1f} s", state="complete")
            ui.render_answer(a.text, a.citations, covered=a.covered, closest=a.closest, unsupported=a.unsupported,
                             flagged=a.flagged)
            # The new answer is the last message of the thread: its steps are kept for this session.
            index = len(engine.history(thread)) - 1
            state.steps[_steps_key(index)] = {"steps": a.steps, "question": question, "rewritten": a.rewritten_query}
            with st.expander("How I answered"):
                ui.render_steps(a.steps, question, a.rewritten_query)
        else:
            status.update(label="Could not answer", state="error")
            err = result.get("error")
            text = err.text if err is not None else "the answer graph finished without an answer"
            exc = err.data.get("exception") if err is not None else None
            st.error(ui.friendly_error(text, exc), icon=":material/error:")
            if err is not None and ui.is_llm_error(err.data.get("exception")):
                runtime.llm_status = f"unavailable: {text}"


question = st.chat_input("Ask your notes…", key="question")
if question and question.strip():
    with st.chat_message("user"):
        st.markdown(ui.md_text(question))
    with st.chat_message("assistant"):
        answer(question.strip())
render_conversations()
