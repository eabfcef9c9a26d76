"""SQLAlchemy engine and sessions, the work tables and their Alembic migrations (no business rules)."""
