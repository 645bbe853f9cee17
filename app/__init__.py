"""kb: a self-hosted knowledge assistant that answers from your own documents, with sources."""

__version__ = "0.1.0"
