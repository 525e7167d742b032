"""Prefect-free building blocks for concurrent S3 transfers, with thin ``@task`` wrappers."""
