"""Vector storage (Chroma) and embeddings. Imports nothing else of ours; takes plain arguments."""
