"""Tools the agent calls. Each declares its inputs, outputs and modalities."""

from __future__ import annotations

import importlib
import logging
from typing import Any

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
        except Exception as exc:  # noqa: BLE001 - one broken tool module must not hide the others
            log.warning("tools in %s not loaded: %s", module, exc)
    return tools


def describe_tool(factory) -> dict[str, Any]:
    """What a registered tool declares (name, description, modalities, body regions, inputs), without building it."""
    return {
        "name": getattr(factory, "name", ""),
        "description": getattr(factory, "description", ""),
        "modalities": sorted(getattr(factory, "modalities", ())),
        "body_regions": sorted(getattr(factory, "body_regions", ())),
        "inputs": dict(getattr(factory, "inputs", {})),
    }
