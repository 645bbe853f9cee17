"""The LLM gateway: providers behind one Protocol, wrapped by cache and cost logging."""
