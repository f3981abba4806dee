"""Alembic migrations of the tokenstore schema (run with `tokenstore migrate`)."""
