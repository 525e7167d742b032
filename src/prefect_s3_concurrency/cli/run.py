"""Run one flow for ``prefect-s3``: check its arguments, run it, print the outcome, exit code.

Exit codes: 0 everything was done; 1 some objects failed or were rejected (or the run failed
for another reason); 2 a usage or configuration error (bad URL or option value, missing
block or bucket, unreachable endpoint, denied access), found before or during the run;
130 Ctrl-C; 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect_s3_concurrency.cli.options import OutputOptions, option_name
from prefect_s3_concurrency.cli.output import (
    print_error,
    print_summary,
    progress_display,
    progress_wanted,
)
from prefect_s3_concurrency.errors import (
    ConfigurationError,
    S3AccessError,
    S3PipelineError,
    describe_error,
)
from prefect_s3_concurrency.runtime import interrupt
from prefect_s3_concurrency.runtime.watchdog import start_watchdog

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
WORKER_CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"  # read by logging.yml overrides


def local_run_settings(heartbeats: bool = False) -> contextlib.AbstractContextManager[Any]:
    """Settings for an ad-hoc local run.

    Prefect 3.9's flow-run heartbeat thread sleeps in whole seconds and the engine joins it at
    the end of the run, so every run is rounded up to the next second (0.5 s on average).
    Heartbeats only serve crash ("zombie") detection of runs that a server or worker tracks;
    a run started from this command line is watched by its caller, so they are off by default.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if heartbeats:
        return contextlib.nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


class _CommandLineLogs(logging.Filter):
    """Keep the console readable: the project's warnings and errors, never Prefect's chatter.

    Prefect's own records (engine states, "Encountered exception" with its traceback) are left
    out: the command prints the outcome itself; so are the per-key lines of
    ``flows.common.log_key_reasons``, as the printed summary names every failed and rejected
    key with its reason. ``--verbose`` keeps every record. Either way the records still reach
    the Prefect API, so the UI has the full log.
    """

    PER_KEY = "log_key_reasons"

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        import prefect

        self.verbose = verbose
        self.prefect_dir = os.path.dirname(prefect.__file__)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        return (
            record.levelno >= logging.WARNING
            and not record.pathname.startswith(self.prefect_dir)
            and record.funcName != self.PER_KEY
        )


class _WithoutTraceback(logging.Formatter):
    """Format a record as ``inner`` would, leaving out its traceback (the UI shows it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord(record.__dict__)
        copy.exc_info = copy.exc_text = copy.stack_info = None
        return self.inner.format(copy)


@contextlib.contextmanager
def command_line_logs(verbose: bool) -> Iterator[None]:
    """Filter Prefect's console handlers for a command-line run (see :class:`_CommandLineLogs`).

    The handlers also write to the current ``sys.stderr`` meanwhile: they keep the stream of
    the moment Prefect configured logging, which may have been replaced since. Worker
    processes started meanwhile (``square``) get ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``
    =CRITICAL unless it is set: their tasks' outcomes come back to this process, which prints
    them (a failed chunk's worker traceback is for the UI, not the terminal).
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    log_filter = _CommandLineLogs(verbose)
    saved = [(h, h.formatter, h.console.file) for h in handlers]
    worker_level = None if verbose or WORKER_CONSOLE_LEVEL in os.environ else "CRITICAL"
    if worker_level:
        os.environ[WORKER_CONSOLE_LEVEL] = worker_level
    for handler, formatter, _ in saved:
        handler.addFilter(log_filter)
        handler.setFormatter(_WithoutTraceback(formatter))
        handler.console.file = sys.stderr
    try:
        yield
    finally:
        for handler, formatter, stream in saved:
            handler.removeFilter(log_filter)
            handler.setFormatter(formatter)
            handler.console.file = stream
        if worker_level:
            os.environ.pop(WORKER_CONSOLE_LEVEL, None)


def parameter_error(exc: BaseException) -> str:
    """Rewrite Prefect's "invalid parameters" error as one line naming the options."""
    lines = [line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip(" -")]
    parts = []
    for line in lines:
        name, sep, message = line.partition(": ")
        parts.append(f"invalid value for {option_name(name)}: {message}" if sep else line)
    return "; ".join(parts) or describe_error(exc)


def _is_parameter_error(exc: BaseException) -> bool:
    """True for Prefect's ``ParameterTypeError`` (without importing Prefect for other errors)."""
    if "prefect.exceptions" not in sys.modules:
        return False
    from prefect.exceptions import ParameterTypeError

    return isinstance(exc, ParameterTypeError)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a run that raised ``exc``."""
    if isinstance(exc, (ConfigurationError, S3AccessError)) or _is_parameter_error(exc):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def outcome_code(summary: Any) -> int:
    """0 if the summary has no failed and no rejected objects, else 1."""
    return (
        EXIT_FAILED if getattr(summary, "failed", None) or getattr(summary, "rejected", None) else 0
    )


def _rejected_message(summary: Any) -> str:
    keys = sorted(summary.rejected)
    more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
    return f"{len(keys)} key(s) rejected as unsafe, not transferred: {', '.join(keys[:5])}{more}"


@dataclass
class FlowCall:
    """One flow run to make: how to load the flow, how to build its arguments, and what to
    check against S3 before Prefect starts (``probe``: raises on a wrong bucket, credentials
    or endpoint)."""

    load: Callable[[], Any]
    arguments: Callable[[Any], dict[str, Any]]
    output: OutputOptions
    label: str
    probe: Callable[[], object] | None = None


def report_failure(exc: BaseException, output: OutputOptions) -> int:
    """Print what a failed run left (its summary, if any) and one error line; return the code."""
    summary = getattr(exc, "summary", None)
    if summary is not None:
        print_summary(summary, output.json)
    elif output.json:
        print_summary({"error": describe_error(exc), "exit_code": exit_code_for(exc)}, True)
    if isinstance(exc, KeyboardInterrupt):
        interrupt.say_once(print_error)
        return interrupt.exit_code()
    if _is_parameter_error(exc):
        print_error(parameter_error(exc))
    elif isinstance(exc, S3PipelineError) or summary is not None:
        print_error(describe_error(exc))
    else:
        print_error(f"the run failed: {describe_error(exc)}")
    return exit_code_for(exc)


def run_flow(call: FlowCall) -> int:
    """Run ``call``: validate, start or find the Prefect API, run, print; return the exit code."""
    from prefect_s3_concurrency.cli.server import PrefectApi

    api = PrefectApi()
    start_watchdog()  # a SIGKILL of this process must not leave its workers alive
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(interrupt.handle_signals(print_error))  # exit 130/143 in 2 s
            if call.probe is not None:
                call.probe()  # one S3 request: a wrong bucket or key is known in a second
            api.start()  # finds or starts the Prefect server while the flow is imported
            flow_obj = call.load()  # imports Prefect, which sets up its logging
            stack.enter_context(command_line_logs(call.output.verbose))
            kwargs = call.arguments(flow_obj)
            if kwargs.get("dask_address"):  # whoever runs this command may name a scheduler
                from prefect_s3_concurrency.flows.runners import allow_dask_address

                allow_dask_address(kwargs["dask_address"])
            flow_obj.validate_parameters(kwargs)  # one-line errors before any run is created
            with (
                api,
                local_run_settings(call.output.heartbeats),
                progress_display(progress_wanted(call.output.progress), call.label),
            ):
                summary = flow_obj(**kwargs)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported as one line
            code = report_failure(exc, call.output)
            if isinstance(exc, KeyboardInterrupt):
                interrupt.leave(code)  # the run is recorded as crashed; skip thread joins
            return code
    print_summary(summary, call.output.json)
    code = outcome_code(summary)
    if code and getattr(summary, "rejected", None):
        print_error(_rejected_message(summary))
    return code
