"""Keep credentials out of logs, whatever the log level.

At DEBUG, botocore logs every request with its headers (``Authorization``, which carries the
signature, and ``X-Amz-Security-Token``, the session token itself) and its SigV4
canonical request and signature. :func:`install_log_redaction` wraps the logging
record factory, so every record is redacted *when it is created*: before any handler (the
console, a file, Prefect's API log handler, pytest's caplog) can see it, and without
depending on which loggers are configured. Each entry point calls it (importing a module
never does): ``prefect-s3``'s ``main``, the start of every flow, each process-pool worker's
start (its initializer), and the client factory when it registers a client's secrets (so
a Dask worker or a library caller is covered too). It masks:

* ``Authorization``, ``X-Amz-Security-Token`` and ``X-Amz-Signature``/``Signature=``
  values, in header dicts, header lines and query strings;
* the SigV4 ``Signature:`` line botocore logs;
* a URL's ``user:password@`` part;
* any secret registered with :func:`register_secret` (the client factory registers the
  secret access key and session token of every client it builds), wherever it appears.

It also escapes non-printable characters with :func:`errors.printable` (``ESC``, ``CR``,
``BEL``...; tab and newline are kept), so an object key in any log line cannot inject
terminal sequences.

Log levels are left alone: DEBUG output stays useful, minus the secrets.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from prefect_s3_concurrency.errors import printable

MASK = "[REDACTED]"
_SENSITIVE = r"authorization|x-amz-security-token|x-amz-signature|x-amz-credential"
_RULES: list[tuple[re.Pattern[str], str]] = [
    # 'Authorization': b'AWS4-HMAC-SHA256 ...'  /  "x-amz-security-token": "..."
    (re.compile(rf"""(?i)(['"]?(?:{_SENSITIVE})['"]?\s*:\s*b?)(['"])(.*?)\2"""), rf"\1\2{MASK}\2"),
    # header lines: "authorization:AWS4-..." (canonical request), "Authorization: ..." (http)
    (re.compile(rf"(?im)^(\s*(?:{_SENSITIVE}))\s*:(?!\s*['\"]).*$"), rf"\1:{MASK}"),
    # query strings and Authorization fragments: X-Amz-Signature=..., Signature=...
    (re.compile(r"(?i)((?:x-amz-)?(?:signature|security-token|credential)=)[^&\s,'\"]+"),
     rf"\1{MASK}"),
    # botocore.auth: "Signature:\n<64 hex>"
    (re.compile(r"(?i)(signature:\s*)[0-9a-f]{40,}"), rf"\1{MASK}"),
    # a URL's user name and password: http://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s'\"]+@"), rf"\1{MASK}@"),
]  # fmt: skip
_secrets: set[str] = set()
_lock = threading.Lock()
_installed: Callable[..., logging.LogRecord] | None = None
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every later log record (ignored if empty or very short)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with credentials masked (see the module docstring)."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
        return
    # tab and newline stay (multi-line log messages use them); no key can move the cursor
    cleaned = printable(redact(message), keep="\t\n")
    if cleaned != message:
        record.msg, record.args = cleaned, ()


def install_log_redaction() -> None:
    """Redact every log record of this process from now on. Idempotent."""
    global _installed
    with _lock:
        if _installed is not None:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = factory
