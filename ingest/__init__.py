"""Ingestion: loaders, chunking, embedding, folder sync and the drop-folder worker."""
