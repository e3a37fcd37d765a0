"""Hybrid retrieval: BM25 + dense fused inside Qdrant, multi-query fusion, reranking, evaluation."""
