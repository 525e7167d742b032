"""Prefect-free core of the CPU stage: square newline-delimited integers, file to file.

Plain functions on *local paths* (never payloads), for spawned ``ProcessPoolTaskRunner``
workers: arguments and results are small and picklable; transforms travel as spec strings.

Input: one ``[+-]?[0-9]+`` per line (arbitrary precision, leading zeros allowed; ``int()``
extras such as ``1_000``, ``0x10`` or non-ASCII digits are rejected). Lines end in ``\\n`` or
``\\r\\n`` (a bare ``\\r`` is an error); the final newline is optional. Spaces and tabs
around a number are stripped; a line that is then empty is an error wherever it appears
(also a trailing ``\\n\\n``), but a 0-byte file is valid and yields a 0-byte output.
Output: one ``\\n``-terminated decimal line per input line, in order.

Memory stays bounded: buffered binary reads in, buffered writes out; only the current line
and its result are held, and a line longer than ``max_line_bytes`` (default 16 MiB, newline
included) fails its object with a clear error after reading at most that many bytes of it.
"""

from __future__ import annotations

import decimal
import functools
import heapq
import operator
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect_s3_concurrency.errors import S3PipelineError, printable
from prefect_s3_concurrency.transforms.registry import (
    TransformError,
    TransformImportError,
    _one_line,
    load_transform,
    square,
)

__all__ = [  # the transform registry lives in transforms.registry; re-exported for callers
    "BadLineError", "ChunkResult", "FileStats", "TransformError", "TransformImportError",
    "load_transform", "square", "transform_file", "transform_files",
]  # fmt: skip

# Exact context for the fast ``square`` path: never rounds (any rounding would raise).
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation],
)
# Lines longer than this go through libmpdec (linear parse/print, NTT multiply) instead of
# CPython 3.11 int, whose int<->str is quadratic: 1,000 digits 24 us vs 52 us per number,
# 50,000 digits 1.9 ms vs 118 ms. Below ~200 digits int is faster.
_DECIMAL_MIN_BYTES = 200
_IO_BUFFER = 1 << 20
DEFAULT_MAX_LINE_BYTES = 16 * 2**20  # a 16 MiB number squares to 32 MiB: bounded, still huge
_SNIPPET_CHARS = 40
# One raw line, terminator included. Strict digits: int() alone would also accept "1_000",
# non-ASCII digits and other whitespace. No nested quantifiers, so matching is linear.
_LINE_RE = re.compile(rb"[ \t]*[+-]?[0-9]+[ \t]*(?:\r?\n)?")

# Measured (2 vCPU box, CPython 3.11.7): transform_file on ~20-digit lines runs at ~32-34 MB/s,
# ~1.5 M numbers/s per process; ~1,000-digit lines ~34-38 MB/s (~35 k numbers/s, decimal).
MB_PER_CPU_SECOND_20_DIGITS = 30.0


class BadLineError(S3PipelineError, ValueError):
    """A line of an input object is not a strict ``[+-]?[0-9]+`` integer.

    Attributes:
        key: Object key (or path) of the offending input.
        lineno: 1-based line number.
        text: The offending line (decoded, truncated to a short snippet).
        reason: Short description, e.g. ``"blank line"`` or ``"not an integer"``.
    """

    def __init__(self, key: str, lineno: int, text: str, reason: str = "not an integer"):
        self.key, self.lineno, self.text, self.reason = key, lineno, text, reason
        super().__init__(f"{printable(key)}: line {lineno}: {reason}: '{printable(text)}'")


def _snippet(raw: bytes) -> str:
    """Decode and truncate an offending line for error messages."""
    text = raw[: _SNIPPET_CHARS * 4].decode("utf-8", "backslashreplace")
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


_digits_lock = threading.Lock()
_digits_depth = 0
_digits_saved = 0


@contextmanager
def unlimited_int_digits() -> Iterator[None]:
    """Lift CPython's int/str digit limit (``sys.set_int_max_str_digits``) while inside.

    The limit is per interpreter, so this is reference-counted and thread-safe: the first
    entrant saves and disables it, the last one out restores it. Other threads convert
    without a limit meanwhile, which is harmless for this workload.
    """
    global _digits_depth, _digits_saved
    with _digits_lock:
        if _digits_depth == 0:
            _digits_saved = sys.get_int_max_str_digits()
            sys.set_int_max_str_digits(0)
        _digits_depth += 1
    try:
        yield
    finally:
        with _digits_lock:
            _digits_depth -= 1
            if _digits_depth == 0:
                sys.set_int_max_str_digits(_digits_saved)


@dataclass(frozen=True)
class FileStats:
    """Outcome of one transformed object."""

    key: str
    input_bytes: int
    output_bytes: int
    numbers: int
    seconds: float


@dataclass(frozen=True)
class ChunkResult:
    """Outcome of a chunk of objects processed by one task (usually in a worker process).

    Attributes:
        ok: Stats of objects transformed successfully.
        failed: Object key -> one-line error message, for objects that failed.
        pid: ``os.getpid()`` of the process that did the work.
        seconds: Wall time for the whole chunk.
    """

    ok: list[FileStats] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    seconds: float = 0.0

    @property
    def input_bytes(self) -> int:
        """Total input bytes of the successful objects."""
        return sum(s.input_bytes for s in self.ok)

    @property
    def numbers(self) -> int:
        """Total numbers transformed in the successful objects."""
        return sum(s.numbers for s in self.ok)


def _bad_line(raw: bytes, key: str, lineno: int) -> BadLineError:
    """Build the error for a raw line (terminator included) that failed ``_LINE_RE``."""
    text = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
    reason = "blank line" if not text.strip(b" \t") else "not an integer"
    return BadLineError(key, lineno, _snippet(text), reason)


def _as_int(result: object, key: str, lineno: int, name: str) -> int:
    """Coerce a transform result via ``__index__`` (int subclasses, numpy ints); no bools."""
    if not isinstance(result, bool) and hasattr(type(result), "__index__"):
        return operator.index(result)  # type: ignore[arg-type]
    kind = type(result).__name__
    raise TransformError(f"{key}: line {lineno}: transform {name!r} returned {kind}, not int")


def _too_long(raw: bytes, key: str, lineno: int, limit: int) -> BadLineError:
    reason = f"line longer than max_line_bytes={limit} ({limit / 2**20:g} MiB)"
    return BadLineError(key, lineno, _snippet(raw[: _SNIPPET_CHARS * 4]), reason)


def _transform_stream(
    src_f, dst_f, fn: Callable[[int], int], name: str, key: str, limit: int
) -> int:
    """Transform every line of ``src_f`` into ``dst_f``; return the count of numbers."""
    write, match, mul, dec = dst_f.write, _LINE_RE.fullmatch, _EXACT.multiply, decimal.Decimal
    fast = fn is square
    lineno = 0
    lines = iter(functools.partial(src_f.readline, limit + 1), b"")  # never more than that
    for lineno, raw in enumerate(lines, 1):
        if len(raw) > limit:
            raise _too_long(raw, key, lineno, limit)
        if match(raw) is None:
            raise _bad_line(raw, key, lineno)
        if fast and len(raw) > _DECIMAL_MIN_BYTES:
            d = dec(raw.decode("ascii"))  # exact; ignores the whitespace _LINE_RE allowed
            write(f"{mul(d, d)}\n".encode("ascii"))  # exponent 0 -> plain digits
            continue
        result = fn(int(raw))  # int() also ignores the allowed whitespace/terminator
        if type(result) is not int:
            result = _as_int(result, key, lineno, name)
        write(b"%d\n" % result)
    return lineno


def _create_partial(dst: Path) -> tuple[int, Path]:
    """Exclusively create ``.<dst name>.<random>.partial`` next to ``dst`` (umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.partial")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def transform_file(
    src: Path | str,
    dst: Path | str,
    transform: str = "square",
    key: str | None = None,
    *,
    fsync: bool = False,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> FileStats:
    """Transform a newline-delimited integer file, writing ``dst`` atomically.

    Output is written to ``.<dst name>.<random>.partial`` in ``dst``'s directory (created
    if missing) and ``os.replace``-d onto ``dst`` on success. On any error the temp file
    is removed and ``dst`` is left untouched (not created).

    Args:
        src: Local input path.
        dst: Local output path.
        transform: Transform spec, see :func:`load_transform`.
        key: Name used in stats and errors (e.g. the S3 key); defaults to ``str(src)``.
        fsync: ``fsync`` the output before renaming it (durability across power loss).
        max_line_bytes: Longest line accepted, its newline included; a longer one fails
            the object after at most this many bytes of it were read.

    Raises:
        BadLineError: A line is not a strict integer, or is longer than ``max_line_bytes``.
        TransformError: The spec cannot be resolved or the transform returned a non-int.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    key = str(src) if key is None else key
    name, fn = load_transform(transform)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_partial(dst)
    try:
        with (
            open(src, "rb", buffering=_IO_BUFFER) as src_f,
            os.fdopen(fd, "wb", buffering=_IO_BUFFER) as dst_f,
            unlimited_int_digits(),
        ):
            numbers = _transform_stream(src_f, dst_f, fn, name, key, max_line_bytes)
            input_bytes = src_f.tell()
            dst_f.flush()
            output_bytes = dst_f.tell()
            if fsync:
                os.fsync(dst_f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return FileStats(key, input_bytes, output_bytes, numbers, time.perf_counter() - started)


def transform_files(
    jobs: Sequence[tuple[str, str, str]],
    transform: str = "square",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ChunkResult:
    """Transform a chunk of ``(key, src_path, dst_path)`` jobs, isolating per-object failures.

    The transform spec is resolved once up front; a bad spec raises :class:`TransformError`
    (a configuration error fails the whole chunk). Any exception while processing one
    object (bad line, unreadable file, transform raising, even ``SystemExit`` or another
    ``BaseException``; only ``KeyboardInterrupt`` stops the chunk) is recorded in ``failed``
    and the chunk continues.
    """
    started = time.perf_counter()
    load_transform(transform)
    ok: list[FileStats] = []
    failed: dict[str, str] = {}
    for key, src, dst in jobs:
        try:
            ok.append(
                transform_file(
                    Path(src), Path(dst), transform, key=key, max_line_bytes=max_line_bytes
                )
            )
        except (BadLineError, TransformError) as exc:
            failed[key] = str(exc)
        except KeyboardInterrupt:  # Ctrl-C reaches the workers too: it stops the run
            raise
        except BaseException as exc:  # noqa: BLE001 - a transform's own error, SystemExit too,
            failed[key] = f"{key}: {type(exc).__name__}: {_one_line(exc)}"  # fails its object
    return ChunkResult(ok, failed, os.getpid(), time.perf_counter() - started)


def plan_chunks(
    sizes: Sequence[tuple[str, int]], target_bytes: int, max_chunks: int | None = None
) -> list[list[str]]:
    """Group objects into balanced chunks of roughly ``target_bytes`` input each.

    The chunk count is ``ceil(total / target_bytes)``, capped by the number of objects and
    by ``max_chunks``; objects are then assigned largest first to the least-loaded chunk
    (LPT). The result is deterministic, holds every key exactly once, has no empty chunk,
    and is ordered heaviest chunk first (keys inside a chunk largest first).

    Args:
        sizes: ``(key, input byte size)`` pairs; keys must be unique.
        target_bytes: Desired input bytes per chunk (size is a proxy for CPU cost).
        max_chunks: Upper bound on the number of chunks, e.g. a multiple of worker count.

    Raises:
        ValueError: Non-positive ``target_bytes``/``max_chunks``, negative sizes or
            duplicate keys.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be > 0, got {target_bytes}")
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    if not sizes:
        return []
    seen: set[str] = set()
    for key, size in sizes:
        if size < 0:
            raise ValueError(f"negative size {size} for {key!r}")
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    total = sum(size for _, size in sizes)
    n = max(1, min(len(sizes), -(-total // target_bytes)))
    if max_chunks is not None:
        n = min(n, max_chunks)
    bins: list[list[str]] = [[] for _ in range(n)]
    loads = [0] * n
    heap = [(0, i) for i in range(n)]  # (load, index): ties go to the lowest index
    for key, size in sorted(sizes, key=lambda item: (-item[1], item[0])):
        load, i = heapq.heappop(heap)
        bins[i].append(key)
        loads[i] = load + size
        heapq.heappush(heap, (loads[i], i))
    order = sorted((i for i in range(n) if bins[i]), key=lambda i: (-loads[i], i))
    return [bins[i] for i in order]


def estimate_cpu_seconds(
    total_bytes: int, mb_per_second: float = MB_PER_CPU_SECOND_20_DIGITS
) -> float:
    """Rough single-core CPU seconds to transform ``total_bytes`` of input.

    Calibrated on ~20-digit integers (see ``MB_PER_CPU_SECOND_20_DIGITS``); files of much
    longer integers cost more per byte, so pass a lower ``mb_per_second`` for those.
    """
    if total_bytes < 0:
        raise ValueError(f"total_bytes must be >= 0, got {total_bytes}")
    return total_bytes / (mb_per_second * 1_000_000)
