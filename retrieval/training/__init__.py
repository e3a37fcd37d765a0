"""Training the project's own cross-encoder reranker (no PyPI package ships one; DESIGN.md §3, §5).

`data` builds (heading → section body) pairs from real Debian documentation, none from an evaluation set,
and mines hard negatives with the project's own hybrid search; `train` fine-tunes a truncated
all-MiniLM-L6-v2 as a `CrossEncoder` on them. `benchmarks/rerank.py` decides whether a result ships.
"""
