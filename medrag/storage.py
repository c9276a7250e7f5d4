"""Crash-safe writing of folders and files that indexes and stores save to.

A saved index is a folder of several files that must agree with each other.
``atomic_folder`` writes them into a hidden sibling folder and swaps it in
with renames, so a crash or an error mid-save leaves the previous folder
intact (at worst a stale ``.name.tmp-*`` sibling is left behind).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medrag.errors import InputError


def utc_now() -> str:
    """The current time as ISO-8601 UTC, second precision (``2024-05-01T12:00:00Z``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to disk (a rename alone does not guarantee that)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Persist a folder's entries (new names, renames). Not possible on Windows: skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON (no NaN) in UTF-8, then flush and fsync."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write one compact JSON value per line, then flush and fsync; returns the line count."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False))
            f.write("\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def read_json(path: str | Path) -> Any:
    """Read a JSON file (raises OSError / ValueError, which loaders turn into their own errors)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | Path) -> list[Any]:
    """Read a JSON-lines file, skipping blank lines; a bad line raises ValueError naming its number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {lineno}: {exc}") from exc
    return rows


def json_object(value: Mapping[str, Any] | None, *, what: str = "metadata") -> dict[str, Any]:
    """A deep copy of ``value`` as it will read back from JSON; InputError if it cannot be saved.

    Round-tripping on the way in means an index behaves the same before and
    after save/load (tuples become lists, keys must be strings).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{what} must be a dict, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise InputError(f"{what} keys must be strings: {list(value)!r}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable (no NaN/inf): {exc}") from exc


@contextmanager
def atomic_folder(path: str | Path, *, marker: str | None = "manifest.json") -> Iterator[Path]:
    """Yield a temporary folder to write into; on normal exit it replaces ``path``.

    The temp folder is a sibling (same filesystem, so renames are atomic). On
    commit: fsync it, move an existing ``path`` aside to a backup, rename the
    temp folder to ``path``, then delete the backup. On any exception the temp
    folder is removed and ``path`` is untouched.

    ``marker``: an existing non-empty ``path`` is only replaced when it holds
    this file, so a mistyped path cannot wipe an unrelated folder. ``None``
    disables the check.
    """
    target = Path(os.path.abspath(Path(path).expanduser()))  # abspath: "." and "dir/" get a name
    if target.exists():
        if not target.is_dir():
            raise InputError(f"Cannot save to {target}: it exists and is not a folder")
        if marker is not None and not (target / marker).is_file() and any(target.iterdir()):
            raise InputError(
                f"Refusing to replace {target}: it is a non-empty folder without {marker}, "
                "so it was not written by medrag. Choose another path or remove it."
            )
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        backup = None
        if target.exists():
            backup = parent / f".{target.name}.bak-{secrets.token_hex(6)}"
            os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            if backup is not None:  # put the previous folder back
                os.replace(backup, target)
            raise
        fsync_dir(parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_folder(path: str | Path) -> bool:
    """Finish what a save killed mid-commit left behind; True when ``path`` exists afterwards.

    atomic_folder moves the old folder to a backup before renaming the new one
    in; a kill between those two renames leaves only the backup. Restore the
    newest backup then, and remove leftover temp folders of dead saves.
    """
    target = Path(os.path.abspath(Path(path).expanduser()))
    parent = target.parent
    if not parent.is_dir():
        return False
    if not target.exists():
        backups = sorted(parent.glob(f".{target.name}.bak-*"), key=lambda p: p.stat().st_mtime)
        if backups:
            os.replace(backups[-1], target)
            fsync_dir(parent)
    return target.exists()


def remove_stale_temp(path: str | Path, older_than_s: float = 3600.0) -> int:
    """Delete temp and backup folders of saves that died over ``older_than_s`` ago."""
    import time

    target = Path(os.path.abspath(Path(path).expanduser()))
    removed = 0
    for leftover in list(target.parent.glob(f".{target.name}.tmp-*")) + list(target.parent.glob(f".{target.name}.bak-*")):
        if target.exists() and time.time() - leftover.stat().st_mtime > older_than_s:
            shutil.rmtree(leftover, ignore_errors=True)
            removed += 1
    return removed


def iter_json_lines(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank JSON line; a bad line is a SourceFileError naming ``where:line``."""
    from medrag.errors import SourceFileError

    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceFileError(f"{where}:{line_no}", f"invalid JSON: {exc.msg}") from exc


def read_text_lines(path: str | Path, missing: str = "file not found") -> list[str]:
    """The lines of a UTF-8 text file; SourceFileError (``missing`` when absent) names the file otherwise."""
    from medrag.errors import SourceFileError

    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise SourceFileError(path, missing) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read as UTF-8 text: {exc}") from exc


def read_queries(path: str | Path) -> list[dict[str, Any]]:
    """A queries file: one ``{"qid", "text"}`` object per line (qid defaults to the line number)."""
    from medrag.errors import InputError, SourceFileError

    path = Path(path)
    lines = read_text_lines(path)
    items = []
    for line_no, item in iter_json_lines(lines, path):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise SourceFileError(f"{path}:{line_no}", 'each line must be an object with a non-empty "text"')
        items.append({"qid": item.get("qid", line_no), "text": item["text"]})
    if not items:
        raise InputError(f"{path} holds no queries")
    return items
