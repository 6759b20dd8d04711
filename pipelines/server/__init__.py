"""The platforms' HTTP service (FastAPI): static feeds and tiles, the CAMARA check, bulk check,
acknowledgements; platform tokens (stored hashed), the audit log and rate limits. It reads
only the published query snapshot, never the state file.
"""
