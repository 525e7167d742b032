"""What ``prefect-s3`` prints: one-line errors, summaries (table or JSON), the progress bar."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from prefect_s3_concurrency.errors import printable

MIB = 2**20
_FLAG_SETTING = re.compile(r"\b([a-z][a-z_]*[a-z])=True\b")
_LIBRARY_PREFIXES = ("Value error, ", "Assertion failed, ")  # pydantic's


def cli_words(text: str) -> str:
    """Say in the command line's words what the library says in Python's.

    ``follow_symlinks=True`` becomes ``--follow-symlinks`` and pydantic's "Value error, "
    prefix goes.
    """
    for prefix in _LIBRARY_PREFIXES:
        text = text.replace(prefix, "")
    return _FLAG_SETTING.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


def print_error(message: str, file: TextIO | None = None) -> None:
    """Print ``error: <message>`` as one line on stderr, in the command line's words."""
    line = printable(cli_words(message.strip()))
    print(f"error: {line}", file=file or sys.stderr, flush=True)


def print_note(message: str, file: TextIO | None = None) -> None:
    """Print ``note: <message>`` as one line on stderr."""
    print(f"note: {printable(message.strip())}", file=file or sys.stderr, flush=True)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Render ``item``/``value`` rows as an aligned two-column table."""
    cells = [(printable(str(r["item"])), printable(str(r["value"]))) for r in rows]
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
        print(cli_words(summary.model_dump_json(indent=2)), file=out)
    elif as_json:
        print(cli_words(json.dumps(summary, default=str, indent=2)), file=out)
    elif hasattr(summary, "rows"):
        print(cli_words(summary_table(summary.rows())), file=out)
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
    """A rich progress display fed by ``runtime.progress``, in binary units like the summary.

    While the source is still being listed it says so (``listing... 3000 objects, 12.0 MiB so
    far``) and shows no bar; once the listing ended (``runtime.progress.planned``), a bar of
    objects and MiB done with the rate and an ETA. Flows that plan nothing (``square``) show
    counts and the rate only.
    """

    def __init__(self, description: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._lock = threading.Lock()
        self._objects = self._total_objects = self._bytes = self._total_bytes = 0
        self._planned = False
        self.description = description
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True, redirect_stdout=False,
        )  # fmt: skip
        self.task = self.progress.add_task(description, total=None, counts="", rate="")

    def expect(self, objects: int, nbytes: int) -> None:
        """Add planned work to the totals."""
        with self._lock:
            self._total_objects += objects
            self._total_bytes += nbytes
            self._refresh()

    def planned(self) -> None:
        """The totals are final: show the bar."""
        with self._lock:
            self._planned = True
            self._refresh()

    def advance(self, objects: int, nbytes: int) -> None:
        """Count finished work."""
        with self._lock:
            self._objects += objects
            self._bytes += nbytes
            self._refresh()

    def _refresh(self) -> None:
        done = f"{self._objects} objects, {self._bytes / MIB:.1f} MiB"
        task = self.progress.tasks[0]
        rate = f"{task.speed / MIB:.1f} MiB/s" if task.speed else ""
        if self._planned:
            counts = (f"{self._objects}/{self._total_objects} objects, "
                      f"{self._bytes / MIB:.1f}/{self._total_bytes / MIB:.1f} MiB")  # fmt: skip
            self.progress.update(self.task, description=self.description, counts=counts,
                                 total=max(1, self._total_bytes), completed=self._bytes,
                                 rate=rate)  # fmt: skip
        elif self._total_objects:
            listing = (f"listing... {self._total_objects} objects, "
                       f"{self._total_bytes / MIB:.1f} MiB so far")  # fmt: skip
            self.progress.update(self.task, description=listing, counts=f"done: {done}",
                                 completed=self._bytes, rate=rate)  # fmt: skip
        else:
            self.progress.update(self.task, counts=done, completed=self._bytes, rate=rate)


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
