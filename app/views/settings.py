"""Settings: the LLM endpoint and model (with a connection test) and the retrieval options, saved to the
settings file and applied at once (the answer engine is rebuilt; no restart)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.services import LIVE_FIELDS, env_overrides, get_runtime, save_settings_file, short_error

VARIANTS = ("default", "fast")
VARIANT_HELP = "default: Qwen2.5-Coder 1.5B (better answers) · fast: Qwen2.5-Coder 0.5B (about 2× faster)"

runtime = get_runtime()
s = runtime.settings

st.title(":material/settings: Settings")
if "settings_note" in st.session_state:
    kind, text = st.session_state.pop("settings_note")
    getattr(st, kind)(text)

with st.form("settings-form"):
    st.subheader("Language model")
    base_url = st.text_input(
        "LLM endpoint", value=s.llm_base_url or "", key="llm_base_url",
        placeholder="empty = the packaged local model (llama.cpp)",
        help="Any OpenAI-compatible API: Ollama (http://localhost:11434/v1), vLLM, LM Studio, a hosted API.")
    model = st.text_input("Model", value=s.llm_model, key="llm_model")
    api_key = st.text_input("API key", value="", type="password", key="llm_api_key",
                            placeholder="unchanged" if s.llm_api_key else "none",
                            help="Only needed by endpoints that check one; leave empty to keep the current key.")
    variant = st.selectbox("Packaged model (used when the endpoint is empty)", VARIANTS,
                           index=VARIANTS.index(s.llm_variant) if s.llm_variant in VARIANTS else 0,
                           key="llm_variant", help=VARIANT_HELP)
    st.subheader("Retrieval")
    k = st.number_input("Passages to retrieve (k)", min_value=1, max_value=50, value=int(s.retrieval_k),
                        key="retrieval_k")
    rerank = st.toggle("Rerank passages with a cross-encoder", value=s.rerank, key="rerank")
    reranker_model = st.text_input(
        "Reranker model", value=s.reranker_model or "", key="reranker_model",
        placeholder="e.g. cross-encoder/ms-marco-MiniLM-L-6-v2, or a local folder",
        help="A sentence-transformers CrossEncoder. Without one, the hybrid search order is used.")
    multi_query = st.toggle("Multi-query: also search rephrasings of the question", value=s.multi_query,
                            key="multi_query", help="Better recall on vague questions; one more LLM call per question.")
    c1, c2, _ = st.columns([1, 1.4, 4])
    save = c1.form_submit_button("Save", type="primary")
    test = c2.form_submit_button("Test connection")

values: dict[str, Any] = {
    "llm_base_url": base_url.strip() or None, "llm_model": model.strip() or s.llm_model,
    "llm_api_key": api_key or s.llm_api_key, "llm_variant": variant, "retrieval_k": int(k), "rerank": bool(rerank),
    "reranker_model": reranker_model.strip() or None, "multi_query": bool(multi_query),
}
candidate = s.model_copy(update=values)
changes = {f: values[f] for f in LIVE_FIELDS if values[f] != getattr(s, f)}

if test:
    from graphs.llm import check_connection

    label = "Starting the packaged model and testing it (the first start can take a minute)…" \
        if not candidate.llm_base_url else f"Testing {candidate.llm_base_url}…"
    with st.spinner(label):
        try:
            ok, message = check_connection(candidate)
        except Exception as exc:  # the message is the result
            ok, message = False, short_error(exc)
    (st.success if ok else st.error)(("Connected: " if ok else "Connection failed: ") + message)

if save:
    if not changes:
        st.info("Nothing changed.")
    else:
        try:
            save_settings_file(s.settings_file, changes)
        except OSError as exc:
            st.error(f"Could not write {s.settings_file}: {short_error(exc)}")
        else:
            restart = runtime.apply_settings(candidate)
            fixed = env_overrides(changes)
            note = f"Saved {', '.join(sorted(changes))} to `{s.settings_file}` and applied them."
            if fixed:
                note += (f" Note: {', '.join(f.upper() for f in fixed)} {'is' if len(fixed) == 1 else 'are'} also set "
                         "in the environment, which wins at the next start.")
            if restart:
                note += f" Restart the app to apply {', '.join(restart)}."
            st.session_state.settings_note = ("success", note)
            st.rerun()

# ------------------------------------------------------------------------------------------------ status
st.subheader("Status")
s = runtime.settings
rows = [
    ("LLM", f"{s.llm_model} @ {s.llm_base_url or f'packaged ({s.llm_variant})'} — {runtime.llm_status}"),
    ("Reranker", runtime.reranker_status or ("off" if not s.rerank else "loading…")),
    ("Store", f"embedded Qdrant Edge at {s.qdrant_path}" if runtime.embedded else f"Qdrant server {s.qdrant_url}"),
    ("Drop folder", str(runtime.inbox) + ("" if runtime.embedded else " (watched by the worker)")),
    ("Embedding model", s.embedding_model),
    ("Settings file", str(s.settings_file)),
]
st.dataframe([{"": a, "value": b} for a, b in rows], hide_index=True, width="stretch")
if runtime.llm_status.startswith("unavailable"):
    st.warning("The language model is unavailable. Set an endpoint above (or fix the packaged model) and use "
               "*Test connection*.", icon=":material/warning:")
