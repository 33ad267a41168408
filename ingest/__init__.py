"""Bulk ingest: image folders and videos into the gallery, through the service's HTTP API
(`ingest.client`) or on Ray Data straight into the store (`ingest.ray_pipeline`).
`python -m ingest --help` for the command."""
