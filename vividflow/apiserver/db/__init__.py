"""Persistence: SQLAlchemy 2.0 models and sessions; the same code runs on SQLite and PostgreSQL."""
