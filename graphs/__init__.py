"""The answer graph: LangGraph nodes, prompts and the LLM runtime."""
