"""bkr's HTTP API (`/v1/…`): fill ingestion, the operator API, the broker API, operations."""
