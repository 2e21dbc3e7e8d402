"""Ingestion: read fill files (CSV, NDJSON, Parquet) and HTTP batches, validate, price in USD,
deduplicate, and write fills and their aggregates, a batch per transaction."""
