"""Storage: SQLAlchemy tables, exact column types, the engine, and Alembic migrations."""
