"""Ingestion: load documents, chunk them token-aware, embed and upsert into the vector store."""
