"""Small, namespace-agnostic edits of S3 XML bodies (listings, completes, errors).

Regular expressions over the text, not a parser: the bodies are the servers' own
well-formed XML, elements are matched by local name in any (or no) namespace, and each
edit keeps the rest of the body byte for byte.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import unquote_plus

__all__ = [
    "complete_parts", "element", "elements", "is_error", "listed_key", "map_blocks",
    "map_elements", "set_element", "text",
]  # fmt: skip


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<(?:[\w.-]+:)?{name}(?:\s[^>]*)?>)(.*?)(</(?:[\w.-]+:)?{name}>)", re.DOTALL
    )


def text(body: bytes) -> str:
    """The body as text (UTF-8, undecodable bytes kept as escapes)."""
    return body.decode("utf-8", "surrogateescape")


def elements(body: str, name: str) -> list[str]:
    """Unescaped texts of every ``<name>`` element."""
    return [html.unescape(m.group(2)) for m in _pattern(name).finditer(body)]


def element(body: str, name: str) -> str | None:
    """Unescaped text of the first ``<name>`` element (None if there is none)."""
    found = elements(body, name)
    return found[0] if found else None


def _escape_like(value: str, original: str) -> str:
    """Escape ``value`` for XML text, quoting ``"`` the way ``original`` did."""
    escaped = html.escape(value, quote=False)
    if "&quot;" in original:
        return escaped.replace('"', "&quot;")
    if "&#34;" in original:
        return escaped.replace('"', "&#34;")
    return escaped


def map_elements(body: str, name: str, edit: Callable[[str], str | None]) -> str:
    """Replace each ``<name>`` text by ``edit(unescaped text)`` (None: leave it)."""

    def one(match: re.Match[str]) -> str:
        new = edit(html.unescape(match.group(2)))
        if new is None:
            return match.group(0)
        return match.group(1) + _escape_like(new, match.group(2)) + match.group(3)

    return _pattern(name).sub(one, body)


def map_blocks(body: str, name: str, edit: Callable[[str], str]) -> str:
    """Replace the inner XML of each ``<name>`` block by ``edit(inner XML)``."""
    return _pattern(name).sub(lambda m: m.group(1) + edit(m.group(2)) + m.group(3), body)


def set_element(block: str, name: str, value: str, after: str = "Key") -> str:
    """Set ``<name>`` in ``block`` to ``value``, adding it after ``<after>`` if absent."""
    if _pattern(name).search(block):
        return map_elements(block, name, lambda _old: value)
    closing = re.search(rf"</(?:[\w.-]+:)?{after}>", block)
    new = f"<{name}>{html.escape(value, quote=False)}</{name}>"
    if closing is None:
        return block + new
    return block[: closing.end()] + new + block[closing.end() :]


def listed_key(block: str, url_encoded: bool) -> str | None:
    """The object key of a listing's ``<Contents>`` block."""
    key = element(block, "Key")
    if key is not None and url_encoded:
        key = unquote_plus(key)
    return key


def complete_parts(body: str) -> list[tuple[int, str]]:
    """``(part number, ETag)`` of each ``<Part>`` of a CompleteMultipartUpload request."""
    parts = []
    for block in _pattern("Part").finditer(body):
        number = element(block.group(2), "PartNumber")
        if number is not None and number.strip().isdigit():
            parts.append((int(number), element(block.group(2), "ETag") or ""))
    return parts


def is_error(body: bytes | None) -> bool:
    """Whether a (200) reply body is an S3 ``<Error>`` document."""
    if not body:
        return False
    head = body[:512].lstrip()
    if head.startswith(b"<?xml"):
        head = head[head.find(b"?>") + 2 :].lstrip()
    return head.startswith(b"<Error>")
