"""A database error never carries the statement's values (patient identifiers, audit payloads) in its text."""

from __future__ import annotations

import io
import logging
import traceback

import pytest
import sqlalchemy as sa

from radtrace.errors import RadtraceError
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

PATIENT = "DOE^JANE PID-31337"


def test_a_failed_statement_names_no_value_it_was_given(store: Store) -> None:
    """Before: SQLAlchemy's DBAPIError text ends ``[parameters: ('DOE^JANE PID-31337', …)]``. It is the ``__cause__``
    of the StoreUnavailableError / PermanentError callers see, and a logged traceback prints the chain, so a failed
    audit insert logged with ``log.exception`` put the row's patient data in the log."""
    with pytest.raises(RadtraceError) as raised, store.session("recording a test row") as session:
        session.execute(sa.text("INSERT INTO no_such_table (name) VALUES (:name)"), {"name": PATIENT})
    chain = "".join(traceback.format_exception(raised.value))
    assert "no_such_table" in chain  # the statement is named: the error still says what failed
    assert PATIENT not in chain, chain
    assert "31337" not in chain, chain
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("radtrace.test").addHandler(handler)
    try:
        logging.getLogger("radtrace.test").error("recording failed", exc_info=raised.value)
    finally:
        logging.getLogger("radtrace.test").removeHandler(handler)
    assert PATIENT not in stream.getvalue()
