"""Talking to S3: connections, transfer engines, checksums, per-object and batch transfers."""
