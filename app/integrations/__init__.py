"""kb from other tools: a LangChain retriever over the HTTP API (``langchain_retriever.KbRetriever``)."""
