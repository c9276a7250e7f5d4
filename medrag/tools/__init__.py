"""Tools the agent calls. Each declares its inputs, outputs and modalities."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# Modules whose import registers medrag's own tools (plugins register through entry points).
BUILTIN_TOOL_MODULES = (
    "medrag.tools.retrieval",
    "medrag.tools.kg_lookup",
    "medrag.tools.vision",
    "medrag.tools.classify",
    "medrag.tools.segment",
    "medrag.tools.image_search",
)


def load_builtin_tools():
    """Import the built-in tool modules so the tool registry knows them; returns the registry."""
    from medrag.registry import tools

    for module in BUILTIN_TOOL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it needs does not
                log.debug("tool module %s not loaded: %s", module, exc)
    return tools
