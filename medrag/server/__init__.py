"""`medrag serve`: an HTTP API with streaming and a web page (pip install "medrag[server]").

``medrag.server.service`` holds the logic (no FastAPI needed); ``medrag.server.app``
the FastAPI app and its static web page.
"""
