"""Prefect flows, archive listing, shard lifecycle, storage and the hcr CLI."""
