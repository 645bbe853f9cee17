"""The HTTP API (FastAPI). ``create_app()`` builds it; nothing starts at import."""
