"""Second Brain's Streamlit entry point: `streamlit run app/main.py` (scripts/run.sh binds it to 127.0.0.1).

This file is the frame around every page: page config, the shared runtime (store, watcher, engine) opened once
per process, a clear notice when it cannot be opened, and navigation over Chat, Library, Memory and Settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on sys.path, not the project root the packages live in.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import logging  # noqa: E402

import streamlit as st  # noqa: E402

from app import services  # noqa: E402
from store.base import StoreError, StoreLocked  # noqa: E402

log = logging.getLogger("app")

st.set_page_config(page_title="Second Brain", page_icon=":material/psychology:", layout="wide")
# Users see a short message, never a traceback (the server log keeps the details).
st.set_option("client.showErrorDetails", "none")
# No "Deploy" button or developer menu: this is a product, not a notebook.
st.set_option("client.toolbarMode", "minimal")

try:
    runtime = services.get_runtime()
except StoreLocked as exc:
    st.error(f"**Your library is open in another process.** {exc}")
    st.caption("Reload this page once the other process has stopped.")
    st.stop()
except StoreError as exc:
    st.error(f"**The library cannot be opened.** {exc}")
    st.stop()
except Exception as exc:  # a broken install or data directory: say what happened, not how
    log.exception("opening the runtime failed")
    st.error(f"**Second Brain could not start.** {services.short_error(exc)}")
    st.stop()

pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
    st.Page("views/library.py", title="Library", icon=":material/library_books:", url_path="library"),
    st.Page("views/memory.py", title="Memory", icon=":material/psychology:", url_path="memory"),
    st.Page("views/settings.py", title="Settings", icon=":material/settings:", url_path="settings"),
]
st.navigation(pages).run()
