"""Memory: what the assistant remembers about the user across conversations: see, edit, forget, add; and the
history of memories that newer ones replaced."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import components as ui
from app.services import get_runtime, short_error

KINDS = ("fact", "preference", "project", "decision")

runtime = get_runtime()
user = runtime.user_id
state = st.session_state

st.title(":material/psychology: Memory")
service = runtime.memory()
if service is None:
    st.info("Long-term memory is not available in this installation yet. Conversations are still kept, and "
            "answers still come from your documents.", icon=":material/psychology:")
    st.stop()
st.caption("What I remember about you across conversations. I learn these from what you tell me; you can "
           "correct, remove or add them here.")


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Run a memory operation: `(ok, result)`; a failure becomes a message, not a traceback."""
    try:
        return True, fn(*args, **kwargs)
    except Exception as exc:
        st.error(f"Could not {what}: {short_error(exc)}")
        return False, None


def _dates(m: Any) -> str:
    created, updated = ui.fmt_time(getattr(m, "created_at", None)), ui.fmt_time(getattr(m, "updated_at", None))
    out = f"added {created}" if created else ""
    if updated and updated != created:
        out += f" · edited {updated}"
    return out


# ------------------------------------------------------------------------------------------------ add
with st.form("add-memory", clear_on_submit=True):
    c1, c2 = st.columns([5, 1.2], vertical_alignment="bottom")
    new_text = c1.text_input("Something to remember", placeholder="e.g. I prefer answers with examples",
                             key="new-memory-text")
    new_kind = c2.selectbox("Kind", KINDS, key="new-memory-kind")
    submitted = st.form_submit_button("Remember", type="primary")
if submitted and new_text.strip() and _call("add the memory", service.add, user, new_text.strip(), kind=new_kind)[0]:
    st.toast("Remembered")

# ------------------------------------------------------------------------------------------------ current
items = _call("read your memories", service.list, user)[1] or []
if not items:
    st.info("Nothing remembered yet. Tell me about your preferences or projects in a chat, or add something above.")
for m in items:
    with st.container(border=True, key=f"memory-{m.id}"):
        cols = st.columns([7, 1, 1], vertical_alignment="center")
        cols[0].markdown(f"{ui.md_text(m.text)}")
        cols[0].caption(f"**{m.kind}** · {_dates(m)}")
        if cols[1].button("Edit", key=f"edit-{m.id}"):
            state.editing_memory = m.id
        if cols[2].button("Delete", key=f"forget-{m.id}") and _call("delete the memory", service.delete, user,
                                                                      m.id)[0]:
            st.toast("Forgotten")
            st.rerun()
        if state.get("editing_memory") == m.id:
            with st.form(f"edit-form-{m.id}"):
                text = st.text_area("Text", value=m.text, key=f"edit-text-{m.id}")
                kind = st.selectbox("Kind", KINDS, index=KINDS.index(m.kind) if m.kind in KINDS else 0,
                                    key=f"edit-kind-{m.id}")
                s1, s2 = st.columns(2)
                save = s1.form_submit_button("Save", type="primary")
                cancel = s2.form_submit_button("Cancel")
            if save and text.strip() and _call("save the memory", service.edit, user, m.id, text=text.strip(),
                                               kind=kind)[0]:
                state.pop("editing_memory", None)
                st.rerun()
            if cancel:
                state.pop("editing_memory", None)
                st.rerun()

# ------------------------------------------------------------------------------------------------ history
everything = _call("read the history", service.list, user, include_superseded=True)[1] or []
current = {m.id: m for m in everything}
old = [m for m in everything if getattr(m, "superseded_by", None)]
with st.expander(f"History — {len(old)} replaced memor{'y' if len(old) == 1 else 'ies'}"):
    if not old:
        st.caption("When a new memory replaces an older one (you changed your mind, a project moved on), the "
                   "older one is kept here.")
    for m in sorted(old, key=lambda m: str(getattr(m, "updated_at", "") or ""), reverse=True):
        newer = current.get(m.superseded_by)
        st.markdown(f"~~{ui.md_text(m.text)}~~" + (f"  \n→ {ui.md_text(newer.text)}" if newer else ""))
        st.caption(f"{m.kind} · {_dates(m)}")
