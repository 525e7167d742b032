"""The ``prefect-s3`` command line (:mod:`.commands`); ``main`` is the entry point."""

from prefect_s3_concurrency.cli.commands import app, main

__all__ = ["app", "main"]
