"""Reliability without a network: temp files, body retries, local errors, redaction."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from botocore.exceptions import IncompleteReadError
from reliability_helpers import partials

from prefect_s3_concurrency.errors import (
    IntegrityError,
    LocalIOError,
    describe_error,
    is_permanent,
    local_io_error,
)
from prefect_s3_concurrency.local.files import list_local_files
from prefect_s3_concurrency.local.paths import (
    MAX_NAME_BYTES,
    check_relative_key,
    is_partial_name,
    partial_name,
)
from prefect_s3_concurrency.local.safe_write import open_partial_at
from prefect_s3_concurrency.local.sync import delete_local, local_extras, remote_extras
from prefect_s3_concurrency.local.tempfiles import remove_stale_partials
from prefect_s3_concurrency.runtime.redact import (
    MASK,
    install_log_redaction,
    redact,
    register_secret,
)
from prefect_s3_concurrency.s3.records import BatchResult
from prefect_s3_concurrency.s3.transfer import (
    BODY_ATTEMPTS,
    S3Object,
    download_objects,
)
from prefect_s3_concurrency.tasks.s3 import BatchFailed, retry_unless_permanent

DATA = b"0123456789" * 100


class _Body:
    def __init__(self, data: bytes, fault: str | None) -> None:
        self.data, self.fault = data, fault

    def iter_chunks(self, size: int):
        if self.fault == "truncate":
            yield self.data[: len(self.data) // 2]
            raise IncompleteReadError(actual_bytes=len(self.data) // 2, expected_bytes=len(DATA))
        if self.fault == "corrupt":
            yield self.data[:10] + bytes([self.data[10] ^ 0xFF]) + self.data[11:]
            return
        yield self.data


class _FakeS3:
    """get_object only; each call takes the next fault from ``faults`` (None: a good body)."""

    def __init__(self, faults: list[str | None]) -> None:
        self.faults, self.calls = list(faults), 0

    def get_object(self, Bucket: str, Key: str, IfMatch: str = "", ChecksumMode: str = "") -> dict:
        self.calls += 1
        assert IfMatch == f'"{hashlib.md5(DATA).hexdigest()}"'
        return {"Body": _Body(DATA, self.faults.pop(0) if self.faults else None)}

    def head_object(self, Bucket: str, Key: str, **kwargs: str) -> dict:
        """After an MD5 mismatch: the object as S3 describes it (no stored checksum)."""
        return {"ContentLength": len(DATA), "ETag": f'"{hashlib.md5(DATA).hexdigest()}"'}


OBJ = S3Object("k/data.txt", len(DATA), hashlib.md5(DATA).hexdigest())


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_bad_body_is_fetched_again(fault: str, tmp_path: Path) -> None:
    s3 = _FakeS3([fault, fault])
    result = download_objects(s3, "b", [(OBJ, str(tmp_path / "data.txt"))])
    assert result.failed == {} and s3.calls == 3 and (tmp_path / "data.txt").read_bytes() == DATA
    assert partials(tmp_path) == []


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_bad_body_every_time_fails_and_leaves_nothing(fault: str, tmp_path: Path) -> None:
    s3 = _FakeS3([fault] * BODY_ATTEMPTS)
    result = download_objects(s3, "b", [(OBJ, str(tmp_path / "data.txt"))])
    assert s3.calls == BODY_ATTEMPTS and list(result.failed) == [OBJ.key]
    assert ("MD5 mismatch" if fault == "corrupt" else "IncompleteRead") in result.failed[OBJ.key]
    assert list(tmp_path.iterdir()) == [] and result.retryable


def test_temp_names_and_long_names(tmp_path: Path) -> None:
    long = "é" * 127  # 254 bytes: a legal name, too long for a naive ".name.tag.suffix"
    tmp = partial_name(long, "abcd1234")
    assert len(tmp.encode()) <= MAX_NAME_BYTES and is_partial_name(tmp)
    assert not is_partial_name("report.partial") and not is_partial_name("a.s3c.partial.txt")
    result = download_objects(_FakeS3([]), "b", [(OBJ, str(tmp_path / long))])
    assert result.failed == {} and (tmp_path / long).read_bytes() == DATA


def test_stale_temp_files_removed_live_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / ".a.txt.0badf00d.s3c.partial"
    stale.write_bytes(b"half")
    s3t = tmp_path / ".b.bin.12345678.s3c.partial"
    s3t.write_bytes(b"half")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.s3c.partial"
    outside.write_bytes(b"not ours")
    (tmp_path / ".link.11111111.s3c.partial").symlink_to(outside)
    with open_partial_at(tmp_path, tmp_path / "live.txt") as live:  # as by a running download
        removed = remove_stale_partials(tmp_path)
        assert live.path.exists()
        assert removed == [s3t.name, "sub/.a.txt.0badf00d.s3c.partial"]
        assert not stale.exists() and not s3t.exists() and outside.read_bytes() == b"not ours"
        fcntl.flock(live.fd, fcntl.LOCK_UN)  # as when its writer dies
        assert remove_stale_partials(tmp_path) == [live.path.name]


USER_PARTIALS = [
    "thesis.s3c.partial",  # no leading dot, no random tag
    "sub/backup.s3c.partial.Ab3dEf9h",  # a tail after the suffix
    ".notes.s3c.partial",  # leading dot but no tag
    ".draft.ABCDEF12.s3c.partial",  # upper-case: our tags are lower-case hex
    ".plan.0a1b2c3.s3c.partial",  # 7 characters
]


def test_user_files_named_like_temp_files_are_data(tmp_path: Path) -> None:
    """Only ``.<name>.<8 hex>.s3c.partial`` is ours: a user's ``*.s3c.partial`` is data."""
    for rel in USER_PARTIALS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
        assert not is_partial_name(Path(rel).name)
        check_relative_key(rel)  # a key of that name is not rejected either
    ours = tmp_path / "sub" / ".x.txt.0a1b2c3d.s3c.partial"
    ours.write_text("stale")
    assert remove_stale_partials(tmp_path) == ["sub/.x.txt.0a1b2c3d.s3c.partial"]
    assert all((tmp_path / rel).read_text() == rel for rel in USER_PARTIALS)
    listed = sorted(rel for rel, _p, _s in list_local_files(tmp_path))
    assert listed == sorted(USER_PARTIALS)  # uploaded like any file, so sync keeps their copy
    assert local_extras(tmp_path, USER_PARTIALS) == ([], [])


def test_local_io_errors_are_one_line_and_permanent(tmp_path: Path) -> None:
    err = local_io_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "f")
    assert isinstance(err, LocalIOError) and "no space left" in str(err) and is_permanent(err)
    assert not is_permanent(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not is_permanent(IntegrityError("MD5 mismatch"))
    perm = BatchResult()
    perm.fail("a", err)
    retry = BatchResult()
    retry.fail("b", IntegrityError("size mismatch"))

    def state(exc: BaseException) -> SimpleNamespace:
        return SimpleNamespace(data=exc)

    assert retry_unless_permanent(None, None, state(BatchFailed(perm))) is False
    perm.merge(retry)
    assert retry_unless_permanent(None, None, state(BatchFailed(perm))) is True
    assert retry_unless_permanent(None, None, state(err)) is False


def test_describe_error_joins_validation_lines() -> None:
    from prefect.exceptions import ParameterTypeError

    exc = ParameterTypeError("Flow run received invalid parameters:\n - workers: must be >= 1")
    assert describe_error(exc) == (
        "ParameterTypeError: Flow run received invalid parameters: workers: must be >= 1"
    )


def test_local_extras_and_delete_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "dest"
    for rel in ["keep.txt", "old.txt", "d/old2.txt", "x.log", ".t.00000000.s3c.partial"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    (root / "escape").symlink_to(tmp_path)  # a directory symlink out of the destination
    extras, left_alone = local_extras(root, {"keep.txt"}, exclude=["*.log"])
    assert extras == ["d/old2.txt", "old.txt"] and left_alone == []
    deleted, failed = delete_local(root, [*extras, "escape/victim.txt", "../victim.txt"])
    assert deleted == extras and set(failed) == {"escape/victim.txt", "../victim.txt"}
    assert victim.read_text() == "outside" and (root / "x.log").exists()
    assert (root / ".t.00000000.s3c.partial").exists()


def test_remote_extras_respect_prefix_and_globs() -> None:
    listed = [S3Object(k, 1) for k in ["p/a", "p/old", "p/old.log", "p2/x", "other/y"]]
    assert remote_extras(listed, "p/", {"p/a"}, exclude=["*.log"]) == ["p/old"]


def test_redaction_of_botocore_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    register_secret("wJalrXUtnFEMI-K7MDENG-SECRET")
    line = (
        "headers={'X-Amz-Security-Token': b'FQoGZXIvYXdzEXAMPLETOKEN', 'Authorization': "
        "b'AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=" + "ab" * 32 + "'}"
    )
    assert "FQoG" not in redact(line) and "ab" * 32 not in redact(line)
    canonical = "GET\n/b/k\n\nhost:h\nx-amz-security-token:FQoGZXIvYXdzEXAMPLETOKEN\n"
    assert redact(canonical).splitlines()[4] == f"x-amz-security-token:{MASK}"
    assert redact("Signature:\n" + "cd" * 32) == f"Signature:\n{MASK}"
    with caplog.at_level(logging.DEBUG, logger="botocore.test"):
        logging.getLogger("botocore.test").debug(
            "key %s and %s", "wJalrXUtnFEMI-K7MDENG-SECRET", line
        )
    assert "wJalr" not in caplog.text and "FQoG" not in caplog.text and MASK in caplog.text
