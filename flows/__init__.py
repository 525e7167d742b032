"""Prefect flows that compose the tasks in :mod:`tasks`."""
