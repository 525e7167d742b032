"""Threads with no settings context of their own see the run's Prefect API.

Prefect's process-pool runner forwards its workers' logs and events from threads of the
flow's process that copy no ``contextvars``: with the API URL set only by
``temporary_settings``, they found none and each started a temporary server, which
outlived ``make demo``.
"""

from __future__ import annotations

import contextlib
import threading

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from prefect_s3_concurrency.runtime import prefect_server as local

URL = "http://127.0.0.1:9/api"


def _url_in_a_new_thread() -> str | None:
    seen: list[str | None] = []
    thread = threading.Thread(target=lambda: seen.append(get_current_settings().api.url))
    thread.start()
    thread.join()
    return seen[0]


def test_settings_everywhere_reaches_threads_without_a_context() -> None:
    with temporary_settings(updates={PREFECT_API_URL: URL}):
        assert _url_in_a_new_thread() != URL  # what Prefect does on its own
        with local.settings_everywhere():
            assert _url_in_a_new_thread() == URL
        assert _url_in_a_new_thread() != URL  # restored on exit


def test_local_prefect_server_block_reaches_threads(monkeypatch, tmp_path) -> None:
    info = local.ServerInfo(pid=0, port=9, started=0.0)
    monkeypatch.setattr(local, "ensure_server", lambda home, on_start=None: (info, False))
    monkeypatch.setattr(local, "in_use", lambda home=None: contextlib.nullcontext())
    with local.local_prefect_server(tmp_path) as got:
        assert got.api_url == URL
        assert _url_in_a_new_thread() == URL
    assert _url_in_a_new_thread() != URL
