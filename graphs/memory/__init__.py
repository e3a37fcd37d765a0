"""Long-term memory the user can see and correct (and the thread's rolling summary).

Memories live in Qdrant beside the chunks (`QdrantMemoryStore`, a LangGraph `BaseStore`), namespaced per user;
`recall_memory` puts the relevant ones in the prompt, `write_memory` learns from each message after the answer,
and `MemoryService` is what the CLI and the app use to list, add, edit and forget them.
"""

from graphs.memory.models import Extraction, MemoryItem
from graphs.memory.nodes import recall, recall_memory, remember_message, write_memory
from graphs.memory.service import MemoryService, make_memory_store
from graphs.memory.store import QdrantMemoryStore

__all__ = [
    "Extraction",
    "MemoryItem",
    "MemoryService",
    "QdrantMemoryStore",
    "make_memory_store",
    "recall",
    "recall_memory",
    "remember_message",
    "write_memory",
]
