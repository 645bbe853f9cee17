"""Provider adapters: each translates one SDK (or algorithm) to the ChatModel Protocol."""
