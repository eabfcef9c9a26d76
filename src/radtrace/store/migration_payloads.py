"""Which audit rows a migration's backfill can read the payload of, so that one edited row cannot stop an upgrade.

An audit payload is canonical JSON as written, but a row edited by hand (which ``radtrace audit verify`` reports as a
broken chain) may hold anything. A backfill that casts every payload (PostgreSQL's ``payload::json``, SQLite's
``json_extract`` on malformed text, a revision cast to INTEGER) then stops the whole upgrade on that one row. A backfill
adds :func:`copyable_assessment_sql` to its WHERE clause (its SELECT list is computed only for the rows that pass),
leaves such rows out as :func:`radtrace.console.dashboard_agreement.copyable_assessment` does at run time, and
:func:`log_rows_left_out` says how many there were (never their content).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

logger = logging.getLogger(__name__)

# PostgreSQL 15 has no ``IS JSON``: a session-local function parses once and turns a cast error into FALSE.
_POSTGRESQL_FUNCTION = r"""
CREATE OR REPLACE FUNCTION pg_temp.radtrace_copyable_assessment(payload text) RETURNS boolean AS $$
DECLARE
    fields json;
BEGIN
    fields := payload::json;
    IF fields IS NULL OR json_typeof(fields) <> 'object' THEN
        RETURN FALSE;
    END IF;
    RETURN CASE json_typeof(fields -> 'revision')
        WHEN 'number' THEN (fields ->> 'revision') ~ '^-?[0-9]{1,9}$'
        WHEN 'string' THEN (fields ->> 'revision') ~ '^[0-9]{1,9}$'
        WHEN 'null' THEN TRUE
        ELSE (fields -> 'revision') IS NULL
    END;
EXCEPTION WHEN others THEN
    RETURN FALSE;
END
$$ LANGUAGE plpgsql IMMUTABLE
"""
_POSTGRESQL_PREDICATE = "pg_temp.radtrace_copyable_assessment({column})"
# Nested CASEs: SQLite evaluates them in order, so json_type never sees malformed text.
_SQLITE_PREDICATE = """(CASE WHEN json_valid({column}) THEN CASE WHEN json_type({column}) = 'object' THEN
    CASE json_type({column}, '$.revision')
        WHEN 'integer' THEN json_extract({column}, '$.revision') BETWEEN -999999999 AND 999999999
        WHEN 'text' THEN (json_extract({column}, '$.revision') NOT GLOB '*[^0-9]*'
                          AND LENGTH(json_extract({column}, '$.revision')) BETWEEN 1 AND 9)
        WHEN 'null' THEN 1
        ELSE json_type({column}, '$.revision') IS NULL
    END ELSE 0 END ELSE 0 END)"""


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def copyable_assessment_sql(column: str = "payload") -> str:
    """SQL that is true where ``column`` holds a JSON object whose ``revision`` (if any) is a whole number of at most
    nine digits: what a backfill of assessment events can read. Creates PostgreSQL's session function first."""
    if _postgresql():
        op.execute(_POSTGRESQL_FUNCTION)
        return _POSTGRESQL_PREDICATE.format(column=column)
    return _SQLITE_PREDICATE.format(column=column)


def log_rows_left_out(event_types: tuple[str, ...]) -> int:
    """Log how many audit rows of these types a backfill guarded by :func:`copyable_assessment_sql` leaves out."""
    predicate = copyable_assessment_sql()
    query = f"SELECT COUNT(*) FROM audit_events WHERE event_type IN :types AND NOT {predicate}"  # noqa: S608 (constant)
    statement = sa.text(query).bindparams(sa.bindparam("types", expanding=True))
    count = int(op.get_bind().execute(statement, {"types": list(event_types)}).scalar_one())
    if count:
        logger.warning(
            "%d audit row(s) of %s have a payload that is not a JSON object with a whole-number revision "
            "(edited after it was recorded?); the upgrade did not copy them. radtrace audit verify names the rows.",
            count,
            ", ".join(event_types),
        )
    return count
