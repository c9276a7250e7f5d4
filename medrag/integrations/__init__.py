"""medrag for other agent frameworks: MCP (``medrag.integrations.mcp``) and LangChain (``medrag.integrations.langchain``).

Each module needs its optional extra (``pip install "medrag[mcp]"``, ``"medrag[langchain]"``) and is imported on demand.
"""
