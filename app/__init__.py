"""The Streamlit app: Chat, Library, Memory and Settings over one process-wide runtime (`app.services`)."""
