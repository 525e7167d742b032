"""What ``prefect-s3`` prints: one-line errors, summaries (table or JSON), the progress bar."""

from __future__ import annotations

import json
import sys
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Escape control characters (newlines included), so ``text`` prints as one safe line."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def print_error(message: str, file: TextIO | None = None) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    print(f"error: {escape_controls(message.strip())}", file=file or sys.stderr, flush=True)


def print_note(message: str, file: TextIO | None = None) -> None:
    """Print ``note: <message>`` as one line on stderr."""
    print(f"note: {escape_controls(message.strip())}", file=file or sys.stderr, flush=True)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Render ``item``/``value`` rows as an aligned two-column table."""
    cells = [(escape_controls(str(r["item"])), escape_controls(str(r["value"]))) for r in rows]
    width = max((len(item) for item, _ in cells), default=0)
    return "\n".join(f"{item:<{width}}  {value}" for item, value in cells)


def print_summary(summary: Any, as_json: bool, file: TextIO | None = None) -> None:
    """Print a flow's summary: its ``model_dump_json`` or an aligned table.

    Args:
        summary: A ``TransferSummary`` or ``PipelineSummary`` (any pydantic model with
            ``rows()``), or any JSON-serialisable value.
        as_json: Print JSON instead of the table.
        file: Where to print; stdout by default.
    """
    out = file or sys.stdout
    if as_json and hasattr(summary, "model_dump_json"):
        print(summary.model_dump_json(indent=2), file=out)
    elif as_json:
        print(json.dumps(summary, default=str, indent=2), file=out)
    elif hasattr(summary, "rows"):
        print(summary_table(summary.rows()), file=out)
    else:
        print(summary, file=out)
    out.flush()


def is_terminal(stream: Any) -> bool:
    """True if ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_wanted(enabled: bool, stdout: Any = None, stderr: Any = None) -> bool:
    """Show a progress bar only if asked and both stdout and stderr are terminals."""
    return enabled and is_terminal(stdout or sys.stdout) and is_terminal(stderr or sys.stderr)


class ProgressBar:
    """A rich progress bar (objects, bytes, rate, ETA) fed by ``runtime.progress``.

    The planned totals grow as the flow plans its batches; until then (and for flows that
    plan none, like ``square``) the bar shows counts and the rate without an ETA.
    """

    def __init__(self, description: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._lock = threading.Lock()
        self._objects = self._total_objects = self._bytes = self._total_bytes = 0
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[objects]} objects"), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True, redirect_stdout=False,
        )  # fmt: skip
        self.task = self.progress.add_task(description, total=None, objects="0")

    def expect(self, objects: int, nbytes: int) -> None:
        """Add planned work to the totals."""
        with self._lock:
            self._total_objects += objects
            self._total_bytes += nbytes
            self._refresh()

    def advance(self, objects: int, nbytes: int) -> None:
        """Count finished work."""
        with self._lock:
            self._objects += objects
            self._bytes += nbytes
            self._refresh()

    def _refresh(self) -> None:
        total = self._total_bytes if self._total_objects else None
        count = (
            f"{self._objects}/{self._total_objects}" if self._total_objects else f"{self._objects}"
        )
        self.progress.update(self.task, completed=self._bytes, total=total, objects=count)


@contextmanager
def progress_display(enabled: bool, description: str) -> Iterator[ProgressBar | None]:
    """Show a progress bar fed by ``runtime.progress`` while the block runs, if ``enabled``."""
    if not enabled:
        yield None
        return
    from prefect_s3_concurrency.runtime import progress

    bar = ProgressBar(description)
    with bar.progress, progress.listening(bar):
        yield bar
