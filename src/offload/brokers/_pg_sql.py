"""The PostgreSQL broker's SQL: migrations, functions and statements, rendered per schema.

Everything lives in ``postgres_sql/`` beside this module and is loaded with
``importlib.resources``:

- ``NNNN_<what>.sql``: numbered migrations, applied in order, each exactly once.
- ``fn_*.sql``: the functions and triggers that make each step atomic. They are
  (re)installed by every migration run, and their checksum is recorded beside the schema
  version, so a database whose functions differ from this offload's is noticed.
- ``queries.sql``: the statements the broker runs, in ``-- name: <name>`` blocks.

Files name the schema ``{schema}`` (an identifier), ``{schema_name}`` (the same as a
string literal) and the notification channel ``{channel}`` (a string literal).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "FUNCTIONS_SHA",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "Statements",
    "functions_script",
    "render",
    "valid_schema",
]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MIGRATION_FILE = re.compile(r"(\d{4})_(\w+)\.sql")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    text: str


def _files() -> dict[str, str]:
    root = resources.files("offload.brokers").joinpath("postgres_sql")
    return {
        f.name: f.read_text(encoding="utf-8") for f in root.iterdir() if f.name.endswith(".sql")
    }


def _migrations(files: dict[str, str]) -> tuple[Migration, ...]:
    found = []
    for filename, text in files.items():
        match = _MIGRATION_FILE.fullmatch(filename)
        if match:
            found.append(Migration(int(match[1]), match[2], text))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"postgres_sql migrations are not numbered 1..n: {found}")
    return tuple(found)


_FILES = _files()
MIGRATIONS = _migrations(_FILES)
LATEST_VERSION = MIGRATIONS[-1].version
_FUNCTION_FILES = sorted(name for name in _FILES if name.startswith("fn_"))
FUNCTIONS_SHA = hashlib.sha256(
    "".join(_FILES[name] for name in _FUNCTION_FILES).encode()
).hexdigest()[:16]


def valid_schema(schema: str) -> bool:
    """True if ``schema`` is a plain identifier offload may use as its schema name."""
    return _SCHEMA_NAME.fullmatch(schema) is not None


def render(text: str, schema: str) -> str:
    """Substitute the schema and the notification channel into SQL text."""
    if not valid_schema(schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    literal = f"'{schema}'"  # a valid schema name needs no escaping
    return (
        text.replace("{schema}", f'"{schema}"')
        .replace("{schema_name}", literal)
        .replace("{channel}", literal)
    )


def functions_script(schema: str) -> str:
    """Every function and trigger, rendered for ``schema``, as one script."""
    return "\n".join(render(_FILES[name], schema) for name in _FUNCTION_FILES)


class Statements:
    """The named statements of ``queries.sql``, rendered for one schema, as bytes.

    Bytes, because psycopg takes them as finished SQL (the schema name is validated
    and quoted on the way in, so nothing else is interpolated).
    """

    def __init__(self, schema: str) -> None:
        self._sql = _statements(schema)

    def __getitem__(self, name: str) -> bytes:
        return self._sql[name]


@cache
def _statements(schema: str) -> dict[str, bytes]:
    text = render(_FILES["queries.sql"], schema)
    parts = _NAME_LINE.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {
        name: _strip_comments(body).encode()
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def _strip_comments(body: str) -> str:
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")
