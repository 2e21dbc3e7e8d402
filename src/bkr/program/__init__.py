"""Use cases that tie the domain to the store: enroll, ingest, re-evaluate, close."""
