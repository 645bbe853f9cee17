"""kb as a Model Context Protocol server: tools (search, ask, list_collections) and documents as resources.

``tools`` does the work, whatever the transport; ``server`` speaks MCP with the official SDK; ``http``
serves it at /mcp in the API (bearer keys), ``kb mcp`` over stdio (the key from the environment).
"""
