"""paperwire's ingest service."""
