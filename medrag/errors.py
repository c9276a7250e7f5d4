"""One exception tree for medrag.

Every error a user can trigger is a ``MedragError`` whose message says what
went wrong and what to do about it. The CLI prints the message on one line and
exits non-zero; inside the agent, tool errors become recorded failed steps.
"""

from __future__ import annotations


class MedragError(Exception):
    """Base class of every error medrag raises on purpose."""

    exit_code = 1


class InputError(MedragError):
    """The caller gave input medrag cannot use (file, question, image, option)."""

    exit_code = 2


class EmptyQueryError(InputError):
    """The question or search query is empty or only whitespace."""


class SourceFileError(InputError):
    """A source file is missing, of the wrong type, corrupt or encrypted."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def failure_reason(exc: Exception) -> str:
    """Why a file was skipped, without its path (reports and logs put the path in front already)."""
    return exc.reason if isinstance(exc, SourceFileError) else str(exc)


class ConfigError(MedragError):
    """Settings or a recipe are invalid."""

    exit_code = 2


class RegistryError(ConfigError):
    """A name was asked of a registry that does not know it."""


class IndexStoreError(MedragError):
    """Base class of index problems (named IndexStoreError to keep builtins.IndexError intact)."""


class IndexNotFound(IndexStoreError):
    exit_code = 2


class IndexExists(IndexStoreError):
    exit_code = 2


class IndexMismatch(IndexStoreError):
    """An index was opened with an embedder other than the one that built it."""

    exit_code = 2


class IndexCorrupt(IndexStoreError):
    """Files of a saved index are missing or inconsistent with its manifest."""


class GraphNotFound(InputError):
    """No saved knowledge graph of that name."""


class GraphCorrupt(MedragError):
    """A saved graph's files are missing, of another format, or do not match the manifest."""


class UnknownNode(InputError):
    """A node id the knowledge graph does not hold."""


class ModelUnavailable(MedragError):
    """A model could not be resolved or loaded; the message names what to install or pass."""


class MissingExtra(ModelUnavailable):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional package '{package}'. "
            f'Install it with: pip install "medrag[{extra}]"'
        )


class ToolError(MedragError):
    """A tool failed; inside the agent this becomes a failed step, not a crash."""


class AgentError(MedragError):
    """The agent graph could not run."""


def require(module: str, *, package: str | None = None, extra: str, purpose: str):
    """Import an optional module or raise MissingExtra naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra(package or module, extra, purpose) from exc
