"""Append-only, hash-chained audit log, its verification and QA queries (never update, never delete)."""
