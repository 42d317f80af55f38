"""What a caller may import from Postgres: a table name, or one read-only ``SELECT``.

The query check is conservative and textual, the first of four layers (then a ``READ ONLY``
transaction, a role with only ``SELECT``, and a statement timeout; see ``dataset_postgres``).
The query is tokenised the way PostgreSQL lexes it (strings with ``standard_conforming_strings``
on, ``E''`` strings, quoted identifiers); anything the tokeniser is not sure about is refused:
comments, dollar quotes, ``U&`` escapes, a backslash or non-ASCII character outside a literal.
It must start with ``SELECT`` or ``WITH``, be one statement (a single trailing ``;`` is
dropped), name no writing keyword (``INSERT``, ``DELETE``, ``INTO``, ``COPY``...) and call no
function that reads server files, changes settings or runs SQL from a string (``pg_*``,
``set_config``, ``query_to_xml``...). A refusal names the word, never quotes the rest.
"""

from __future__ import annotations

import re

from psycopg2 import sql

from e2i_pipelines.core.dataset_ingest import DatasetInvalid

MAX_QUERY_CHARS = 100_000
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"
WRITING_WORDS = frozenset({
    "insert", "update", "delete", "merge", "truncate", "copy", "create", "drop", "alter",
    "grant", "revoke", "lock", "into", "call", "execute", "prepare", "listen", "notify"})
"""Unquoted words refused anywhere in a query (a column so named must be double-quoted)."""
REFUSED_PREFIXES = ("pg_", "lo_", "dblink")
REFUSED_NAMES = frozenset({
    "set_config", "current_setting", "txid_current", "nextval", "setval",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
    "database_to_xmlschema", "database_to_xml_and_xmlschema"})
"""Names (quoted or not) refused: server files, settings, sequences, SQL run from a string."""
ALLOWED_NAMES = frozenset({"pg_sleep"})
"""``pg_*`` names allowed: waiting is bounded by the statement timeout."""
_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\f]+)
  | (?P<comment>--|/\*)
  | (?P<unicode>[uU]&['"])
  | (?P<string>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<semicolon>;)
  | (?P<symbol>[-+*/<>=~!@#%^&|`?(),.\[\]:])
""", re.VERBOSE | re.DOTALL)


class QueryRefused(DatasetInvalid):
    """The query is not a single read-only SELECT (the message names why)."""

    field = "query"


class TableRefused(DatasetInvalid):
    field = "table"


def table_statement(table: str) -> sql.Composed:
    """``SELECT * FROM "schema"."name"`` for a table name matching :data:`TABLE_PATTERN`."""
    if not isinstance(table, str) or not re.match(TABLE_PATTERN, table):
        raise TableRefused("table must be 'name' or 'schema.name' (letters, digits, '_'; each "
                           "part at most 63 characters, not starting with a digit)")
    return sql.SQL("SELECT * FROM {}").format(sql.Identifier(*table.split(".")))


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            raise QueryRefused(_unexpected(query[position]) + f" at character {position + 1}")
        kind = match.lastgroup or ""
        if kind == "comment":
            raise QueryRefused("comments are not allowed in a query")
        if kind == "unicode":
            raise QueryRefused("U& (Unicode escape) strings and identifiers are not allowed")
        if kind != "space":
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _unexpected(char: str) -> str:
    if char in "'\"":
        return "an unterminated string or quoted identifier"
    if char == "$":
        return "'$' (dollar quotes and parameters are not allowed)"
    if char == "\\":
        return "a backslash outside a string"
    return f"an unexpected character (code {ord(char)})"


def _refused_name(name: str) -> bool:
    if name in ALLOWED_NAMES:
        return False
    return name in REFUSED_NAMES or name.startswith(REFUSED_PREFIXES)


def check_query(query: str) -> sql.SQL:
    """``query`` as one SELECT statement (trailing ``;`` dropped); QueryRefused otherwise."""
    if not isinstance(query, str) or not query.strip():
        raise QueryRefused("query must be a non-empty SELECT statement")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryRefused(f"query is longer than {MAX_QUERY_CHARS} characters")
    tokens = _tokens(query)
    while tokens and tokens[-1][0] == "semicolon":
        tokens.pop()
    if not tokens or tokens[0][0] != "word" or tokens[0][1].lower() not in ("select", "with"):
        raise QueryRefused("query must start with SELECT or WITH (only reading queries are allowed)")
    for kind, text in tokens:
        if kind == "semicolon":
            raise QueryRefused("query must be one statement: ';' separates statements")
        name = text.lower() if kind == "word" else text[1:-1].replace('""', '"').lower()
        if kind == "word" and name in WRITING_WORDS:
            raise QueryRefused(f"query must only read: {name.upper()} is not allowed "
                               "(double-quote a column with that name)")
        if kind in ("word", "quoted") and _refused_name(name):
            raise QueryRefused(f"query may not use {name[:64]!r} (server files, settings, "
                               "sequences, system catalogs and SQL in strings are off limits)")
    end = query.rstrip(" \t\r\n\f")
    while end.endswith(";"):
        end = end[:-1].rstrip(" \t\r\n\f")
    return sql.SQL(end)
