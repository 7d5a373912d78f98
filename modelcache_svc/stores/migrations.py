"""Versioned SQL migrations: ``migrations/<dialect>/NNNN_name.sql`` at the repo root.

A file holds statements separated by ``;`` at line ends. Table names are
written ``{prefix}entries``; the prefix is substituted here and is the only
text ever formatted into SQL, so it is validated first. The stores apply the
statements (each dialect locks and transacts in its own way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgument

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
DIALECTS = ("sqlite", "mysql")

_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,31}$", re.ASCII)
_PREFIX = re.compile(r"^(?:[a-z][a-z0-9_]{0,31}_)?$", re.ASCII)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$", re.ASCII)
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def table_prefix(namespace: str) -> str:
    """The table prefix: empty, or the namespace and an underscore. Refuses anything else."""
    if not isinstance(namespace, str):
        raise InvalidArgument("namespace must be a string")
    if namespace == "":
        return ""
    if not _NAMESPACE.match(namespace):
        raise InvalidArgument(f"namespace {namespace[:40]!r} is invalid: it must match ^[a-z][a-z0-9_]{{0,31}}$")
    return namespace + "_"


def split_statements(sql: str) -> list[str]:
    """Statements of a file, without full-line comments; empty pieces dropped."""
    out: list[str] = []
    for chunk in _STATEMENT_END.split(sql):
        lines = [line for line in chunk.splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            out.append(statement)
    return out


def load_migrations(dialect: str, prefix: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration of a dialect in version order, with the prefix substituted."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    # Re-checked here because this is where the prefix meets SQL text.
    if not _PREFIX.match(prefix):
        raise InvalidArgument(f"table prefix {prefix[:40]!r} is invalid")
    folder = directory / dialect
    if not folder.is_dir():
        raise FileNotFoundError(f"migrations folder {folder} is missing")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations with version {version} in {folder}")
        # str.replace, not str.format: SQL may hold braces of its own.
        text = path.read_text(encoding="utf-8").replace("{prefix}", prefix)
        found[version] = Migration(version, match.group(2), tuple(split_statements(text)))
    return [found[v] for v in sorted(found)]
