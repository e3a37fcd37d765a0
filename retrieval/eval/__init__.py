"""Retrieval evaluation on BEIR-format datasets: loading, the rank-bm25 baseline and the harness."""
