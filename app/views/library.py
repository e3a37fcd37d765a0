"""Library: upload documents, watch them being indexed, see each one's status, delete or re-index it.

With `?doc=<id>&chunk=<n>` in the address it shows a cited passage inside its original document instead (the
citations under an answer link here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from app import components as ui
from app.services import get_runtime, short_error
from ingest.loaders import SUPPORTED_SUFFIXES
from store.manifest import FileRow

STATUS_LABEL = {"done": ":green-badge[ready]", "failed": ":red-badge[failed]", "queued": ":orange-badge[queued]",
                "ingesting": ":blue-badge[indexing]"}
FILTERS = {"All": None, "Ready": ("done",), "In progress": ("queued", "ingesting"), "Failed": ("failed",)}
MAX_ROWS = 200

runtime = get_runtime()
state = st.session_state
ui.inject_css()

# ------------------------------------------------------------------------------------------------ source view
params = st.query_params
if params.get("doc"):
    if st.button("← Back to the library", key="back-to-library"):
        st.query_params.clear()
        st.rerun()
    try:
        chunk_index = int(params.get("chunk", "0"))
    except ValueError:
        chunk_index = 0
    ui.render_source(runtime, params["doc"], chunk_index, ui.parse_span(params.get("hl")))
    st.stop()

# ------------------------------------------------------------------------------------------------ upload
st.title(":material/library_books: Library")
state.setdefault("upload_round", 0)
files = st.file_uploader(
    "Add documents", type=sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES), accept_multiple_files=True,
    key=f"upload-{state.upload_round}",
    help="PDF, Word, Markdown, text and HTML. A file with the same name as one in the library replaces it.")
if files:
    added, same, failed = [], [], []
    for f in files:
        try:
            path, changed = runtime.save_upload(f.name, f.getvalue())
        except (OSError, ValueError) as exc:
            failed.append(f"{f.name}: {short_error(exc)}")
            continue
        (added if changed else same).append(path.name)
    notes = []
    if added:
        notes.append(f"Added {len(added)} file{'s' if len(added) != 1 else ''} ({', '.join(added)}): indexing starts "
                     "in a moment.")
    if same:
        notes.append(f"Already in the library, unchanged: {', '.join(same)}.")
    state.upload_note = (" ".join(notes), failed)
    state.upload_round += 1  # a fresh uploader: the same files are not saved again on the next run
    if added and runtime.watcher is not None and not runtime.watcher.alive:
        runtime.sync_now()
    st.rerun()
if "upload_note" in state:
    note, failed = state.pop("upload_note")
    if note:
        st.success(note, icon=":material/upload_file:")
    for f in failed:
        st.error(f"Could not save {f}")
st.caption(f"Or drop files into **`{runtime.inbox}`** — new, changed and deleted files are picked up automatically.")


# ------------------------------------------------------------------------------------------------ the list
def _key(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]


def _progress(rows: list[FileRow]) -> None:
    snap = runtime.activity.snapshot()
    pending = [r for r in rows if r.status in ("queued", "ingesting")]
    if snap["running"] and snap["total"]:
        done, total = snap["done"], snap["total"]
        current = Path(snap["current"]).name if snap["current"] else ""
        st.progress(min(done / total, 1.0), text=f"Indexing {done} of {total}" + (f" · {current}" if current else ""))
    elif pending:
        # Server mode (a separate worker), or the watcher has not reported yet.
        names = ", ".join(Path(r.path).name for r in pending[:3]) + (" …" if len(pending) > 3 else "")
        st.progress(0.0, text=f"{len(pending)} waiting to be indexed: {names}")
    if snap["error"]:
        st.warning(f"The last sync failed: {snap['error']}")
    watcher = runtime.watcher
    if runtime.embedded and watcher is not None and not watcher.alive:
        st.warning("The folder watcher has stopped; new files are not picked up.")
        if st.button("Restart the watcher", key="restart-watcher"):
            watcher.start()


def _ask_delete(path: str) -> None:
    state.confirm_delete = path


def _delete(path: str) -> None:
    result = runtime.delete_document(path)
    state.pop("confirm_delete", None)
    state.library_note = f"Deleted {Path(path).name}." if result.outcome == "deleted" else result.reason


def _reindex(path: str) -> None:
    runtime.reindex_document(path)
    state.library_note = f"Re-indexing {Path(path).name}…"


def _confirm_delete() -> None:
    path = state.get("confirm_delete")
    if not path:
        return
    in_inbox = runtime.inbox.resolve() in Path(path).resolve().parents
    with st.container(border=True):
        st.warning(f"Delete **{Path(path).name}** from the library?"
                   + (" The file in the drop folder is deleted too." if in_inbox else " The file on disk is kept."))
        c1, c2, _ = st.columns([1, 1, 4])
        # Callbacks: they run before the (fragment) rerun, so the list below is already up to date.
        c1.button("Delete", type="primary", key="confirm-delete-yes", on_click=_delete, args=(path,))
        c2.button("Cancel", key="confirm-delete-no", on_click=lambda: state.pop("confirm_delete", None))


def _row(r: FileRow) -> None:
    key = _key(r.path)
    name = Path(r.path).name
    cols = st.columns([4, 1.3, 0.8, 0.8, 1.6, 0.6, 0.6], vertical_alignment="center")
    cols[0].markdown(f"**{ui.md_text(name)}**")
    if r.status == "failed" and r.error:
        cols[0].caption(f":material/error: {r.error}")
    elif r.warnings:
        cols[0].caption(f":material/warning: {r.warnings}")
    cols[1].markdown(STATUS_LABEL.get(r.status, r.status))
    cols[2].markdown(str(r.pages or "—"))
    cols[3].markdown(str(r.chunks or "—"))
    cols[4].markdown(ui.fmt_time(r.finished_at) if r.status in ("done", "failed") else "—")
    busy = r.status in ("queued", "ingesting")
    cols[5].button("", icon=":material/refresh:", key=f"reindex-{key}", help="Re-index this document", disabled=busy,
                   on_click=_reindex, args=(r.path,))
    cols[6].button("", icon=":material/delete:", key=f"delete-{key}", help="Delete this document", on_click=_ask_delete,
                   args=(r.path,))


@st.fragment(run_every=2)
def library_panel() -> None:
    """Polled every 2 s: the watcher's progress and the manifest, so new files appear without a reload."""
    rows = runtime.documents()
    _progress(rows)
    if not rows:
        st.info(
            "**Your library is empty.** Upload documents above, or drop files into "
            f"`{runtime.inbox}` (PDF, Word, Markdown, text, HTML). They appear here as they are indexed, and then "
            "you can ask about them on the Chat page.", icon=":material/waving_hand:")
        return
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("done", "failed", "queued", "ingesting")}
    m = st.columns(4)
    m[0].metric("Ready", counts["done"])
    m[1].metric("Chunks", sum(r.chunks for r in rows if r.status == "done"))
    m[2].metric("In progress", counts["queued"] + counts["ingesting"])
    m[3].metric("Failed", counts["failed"])

    f1, f2 = st.columns([2, 3], vertical_alignment="bottom")
    query = f1.text_input("Search by name", key="library-search", placeholder="filter by file name")
    which = f2.radio("Show", list(FILTERS), horizontal=True, key="library-filter", label_visibility="collapsed")
    wanted = FILTERS.get(which or "All")
    shown = [r for r in rows if (not wanted or r.status in wanted)
             and (not query or query.lower() in Path(r.path).name.lower())]
    if "library_note" in state:
        st.toast(state.pop("library_note"))
    _confirm_delete()
    if not shown:
        st.caption("No document matches.")
        return
    header = st.columns([4, 1.3, 0.8, 0.8, 1.6, 0.6, 0.6])
    for col, title in zip(header, ("document", "status", "pages", "chunks", "ingested", "", ""), strict=True):
        col.caption(title)
    for r in shown[:MAX_ROWS]:
        _row(r)
    if len(shown) > MAX_ROWS:
        st.caption(f"Showing {MAX_ROWS} of {len(shown)}: search by name to narrow the list.")


library_panel()
