"""Settings every node of a site must share, recorded in the database where each node compares its own at start.

A setting that differs between the nodes of one site without any single node being wrong on its own (each passes
its own start-up checks) is recorded here by the first node that starts (``site_settings``: one row per name), and
each node started later compares its own value with it (:mod:`radtrace.preflight.site_broker`: the broker's Redis
database number, key prefix and queue names). No patient data: setting values (passwords never) and the host that
recorded them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.store.base import Base, UtcDateTime
from radtrace.store.engine import Store, translate_db_error
from radtrace.store.nodes import database_now

__all__ = ["RecordedSetting", "SiteSetting", "read_site_setting", "record_site_setting"]


class SiteSetting(Base):
    """One setting the site's nodes share, as the node that recorded it had it."""

    __tablename__ = "site_settings"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(1024), doc="JSON; never a password")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(sa.String(300), doc="the role and host of the node that recorded it")


@dataclass(frozen=True)
class RecordedSetting:
    """A ``site_settings`` row."""

    value: str
    recorded_at: datetime
    recorded_by: str


def read_site_setting(store: Store, name: str) -> RecordedSetting | None:
    """The site's recorded ``name``; None when none is recorded (or before the table's migration)."""
    try:
        with store.engine.connect() as connection:
            if not sa.inspect(connection).has_table("site_settings"):
                return None
            row = connection.execute(
                sa.select(SiteSetting.value, SiteSetting.recorded_at, SiteSetting.recorded_by).where(
                    SiteSetting.name == name
                )
            ).first()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, f"reading the site's {name} setting") from exc
    return None if row is None else RecordedSetting(str(row[0]), row[1], str(row[2]))


def record_site_setting(store: Store, name: str, value: str, recorded_by: str, *, replace: bool) -> RecordedSetting:
    """Record ``value`` as the site's ``name`` when none is (``replace``: in place of the one recorded); returns the
    row as it then is: a node that started at the same moment may have recorded its own first (PostgreSQL)."""
    with store.session(f"recording the site's {name} setting") as session:
        connection = session.connection()
        values = {"name": name, "value": value, "recorded_at": database_now(connection),
                  "recorded_by": recorded_by[:300]}  # fmt: skip
        if connection.dialect.name == "postgresql":
            insert = postgresql.insert(SiteSetting).values(**values)
            if replace:
                session.execute(insert.on_conflict_do_update(index_elements=["name"], set_=values))
            else:
                session.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        else:  # the embedded SQLite database: one host, one writer at a time
            if replace:
                session.execute(sa.delete(SiteSetting).where(SiteSetting.name == name))
            if replace or session.get(SiteSetting, name) is None:
                session.execute(sa.insert(SiteSetting).values(**values))
    recorded = read_site_setting(store, name)
    assert recorded is not None
    return recorded
