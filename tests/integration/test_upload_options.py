"""Upload headers as aws-cli sets them: Content-Type from the file name, encryption, storage
class, Cache-Control; on the command line, in the flows' run form, and on stored objects."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

import pytest
from cli_support import calls, flow_and_kwargs, one_error  # noqa: F401 - the fixture
from pydantic import ValidationError

from prefect_s3_concurrency.cli import commands as cli
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import upload_directory
from prefect_s3_concurrency.s3 import object_headers
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import open_engine
from prefect_s3_concurrency.s3.records import LocalFile
from prefect_s3_concurrency.s3.transfer import upload_files
from prefect_s3_concurrency.s3.upload_options import (
    ObjectAttributes,
    UploadOptions,
    guess_content_type,
)

MIB = 2**20
EXPECTED_TYPES = {
    "index.html": "text/html", "site/style.css": "text/css", "d.json": "application/json",
    "t.csv": "text/csv", "notes.txt": "text/plain", "i.png": "image/png", "p.jpg": "image/jpeg",
    "logo.svg": "image/svg+xml", "a.gz": "application/gzip", "t.csv.gz": "application/gzip",
    "x.tgz": "application/gzip", "blob.unknownext": None, "README": None,
}  # fmt: skip


def test_content_types_come_from_pythons_table() -> None:
    for name, expected in EXPECTED_TYPES.items():
        assert guess_content_type(name) == expected, name
    # Python < 3.12 says application/javascript, later ones text/javascript.
    assert guess_content_type("app.js") in ("application/javascript", "text/javascript")


def test_the_machines_mime_types_file_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = tmp_path / "mime.types"
    machine.write_text("application/x-machine html\nx-custom/type unknownext\n")
    for name in ("inited", "_db", "types_map", "encodings_map", "suffix_map", "common_types"):
        monkeypatch.setattr(mimetypes, name, getattr(mimetypes, name))  # restored afterwards
    monkeypatch.setattr(mimetypes, "knownfiles", [str(machine)])
    mimetypes.init()  # what a module-level mimetypes.guess_type would read
    assert mimetypes.guess_type("blob.unknownext")[0] == "x-custom/type"
    assert guess_content_type("blob.unknownext") is None
    assert guess_content_type("index.html") == "text/html"


def test_options_give_each_key_its_headers() -> None:
    assert UploadOptions().attributes_for("a/b.html") == ObjectAttributes("text/html")
    assert UploadOptions().attributes_for("a/b.unknownext") is None  # nothing to send
    assert UploadOptions(guess_mime_type=False).attributes_for("b.html") is None
    forced = UploadOptions(content_type="text/x-forced", guess_mime_type=False)
    assert forced.attributes_for("b.html") == ObjectAttributes("text/x-forced")
    full = UploadOptions(
        sse="aws:kms", sse_kms_key_id="alias/k", storage_class="STANDARD_IA",
        cache_control="max-age=60",
    ).attributes_for("b.png")  # fmt: skip
    assert full is not None and full.boto3_args() == {
        "ContentType": "image/png", "CacheControl": "max-age=60",
        "StorageClass": "STANDARD_IA", "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/k",
    }  # fmt: skip
    assert full.object_store_attributes() == {
        "Content-Type": "image/png", "Cache-Control": "max-age=60",
        "Storage-Class": "STANDARD_IA",
    }  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [{"sse": "aws:kms:dsse"}, {"storage_class": "COLD"}, {"sse_kms_key_id": "k"},
     {"cache_control": "max-age=1\r\nX-Evil: 1"}, {"content_type": "text/plain\n"}],
)  # fmt: skip
def test_invalid_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        UploadOptions(**bad)
    assert UploadOptions(content_type="", cache_control="") == UploadOptions()  # form blanks


def test_run_forms_describe_the_options() -> None:
    for flow_obj in (upload_directory, square_objects):
        schema = flow_obj.parameters.model_dump()
        fields = schema["definitions"]["UploadOptions"]["properties"]
        assert set(fields) == {"content_type", "guess_mime_type", "sse", "sse_kms_key_id",
                               "storage_class", "cache_control"}  # fmt: skip
        assert all(f.get("description") for f in fields.values()), fields
        assert "upload_options" in schema["properties"]


@pytest.fixture
def local_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a directory holding the upload sources the commands name (checked first)."""
    monkeypatch.chdir(tmp_path)
    for name in ("site", "d"):
        (tmp_path / name).mkdir()


@pytest.mark.usefixtures("local_dirs")
def test_cli_maps_upload_flags(calls: list[Any]) -> None:
    argv = ["cp", "./site", "s3://bkt/www", "--content-type", "text/x-forced", "--sse",
            "aws:kms", "--sse-kms-key-id", "alias/k", "--storage-class", "STANDARD_IA",
            "--cache-control", "max-age=60", "--no-guess-mime-type"]  # fmt: skip
    assert cli.main(argv) == 0
    assert cli.main(["square", "s3://in-bkt/x", "s3://out-bkt/y", "--sse", "AES256"]) == 0
    assert cli.main(["cp", "./site", "s3://bkt/www"]) == 0
    _, kwargs = flow_and_kwargs(calls[0])
    assert kwargs["upload_options"] == UploadOptions(
        content_type="text/x-forced", guess_mime_type=False, sse="aws:kms",
        sse_kms_key_id="alias/k", storage_class="STANDARD_IA", cache_control="max-age=60",
    )  # fmt: skip
    assert flow_and_kwargs(calls[1])[1]["upload_options"] == UploadOptions(sse="AES256")
    assert flow_and_kwargs(calls[2])[1]["upload_options"] == UploadOptions()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--sse", "aws:kms:dsse"], "--sse"), (["--storage-class", "COLD"], "--storage-class"),
     (["--sse-kms-key-id", "k"], "--sse-kms-key-id needs --sse aws:kms")],
)  # fmt: skip
@pytest.mark.usefixtures("local_dirs")
def test_bad_upload_flags_exit_2_in_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from prefect_s3_concurrency.cli.run import report_failure

    def run_arguments(call: Any) -> int:  # as run_flow does: build the arguments, report
        try:
            flow_and_kwargs(call)
        except Exception as exc:  # noqa: BLE001
            return report_failure(exc, call.output)
        return 0

    monkeypatch.setattr(cli, "run_flow", run_arguments)
    assert cli.main(["cp", "./d", "s3://bkt/p", *argv]) == 2
    assert expected in one_error(capsys.readouterr().err)


def test_upload_flags_are_refused_for_downloads(calls: list[Any]) -> None:
    cli.main(["cp", "s3://bkt/p", "out", "--sse", "AES256"])
    with pytest.raises(Exception, match="--sse is not supported by download-prefix"):
        flow_and_kwargs(calls[0])


def _files(root: Path) -> list[LocalFile]:
    bodies = {"index.html": b"<p>hi</p>", "data.json": b"{}", "big.csv": os.urandom(17 * MIB),
              "blob.unknownext": b"\x00"}  # fmt: skip
    items = []
    for name, body in bodies.items():
        (root / name).write_bytes(body)
        items.append(LocalFile(str(root / name), f"p/{name}", len(body)))
    return items


@pytest.mark.parametrize("engine_name", ["obstore", "boto3"])
def test_objects_carry_the_headers_on_moto_server(
    engine_name: str, moto_server, bucket_factory, tmp_path: Path
) -> None:
    bucket = bucket_factory(moto_server)
    options = UploadOptions(sse="AES256", storage_class="STANDARD_IA", cache_control="max-age=9")
    engine = open_engine(S3Connection(endpoint_url=moto_server.endpoint_url), engine_name)
    try:
        result = upload_files(engine, bucket, _files(tmp_path), options=options, in_flight=4)
    finally:
        engine.close()
    assert result.failed == {} and len(result.transferred) == 4
    client = moto_server.client()
    expected = {"index.html": "text/html", "data.json": "application/json",
                "big.csv": "text/csv", "blob.unknownext": "binary/octet-stream"}  # fmt: skip
    for name, content_type in expected.items():  # big.csv: a multipart upload
        head = client.head_object(Bucket=bucket, Key=f"p/{name}")
        assert head["ContentType"] == content_type, name
        assert head.get("CacheControl") == "max-age=9", name
        assert head.get("StorageClass") == "STANDARD_IA", name
        assert head.get("ServerSideEncryption") == "AES256", name


@pytest.mark.parametrize("engine_name", ["obstore", "boto3"])
def test_kms_key_and_forced_type_on_moto_server(
    engine_name: str, moto_server, bucket_factory, tmp_path: Path
) -> None:
    bucket = bucket_factory(moto_server)
    options = UploadOptions(content_type="text/x-forced", sse="aws:kms", sse_kms_key_id="k-1")
    engine = open_engine(S3Connection(endpoint_url=moto_server.endpoint_url), engine_name)
    items = _files(tmp_path)[:2]
    try:
        result = upload_files(engine, bucket, items, options=options)
    finally:
        engine.close()
    assert result.failed == {}
    head = moto_server.client().head_object(Bucket=bucket, Key="p/index.html")
    assert head["ContentType"] == "text/x-forced"
    assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", "k-1")


@pytest.mark.parametrize("engine_name", ["obstore", "boto3"])
def test_content_type_on_rclone(
    engine_name: str, rclone_s3, rclone_block, bucket_factory, tmp_path: Path
) -> None:
    bucket = bucket_factory(rclone_s3)
    conn = S3Connection(credentials_block=rclone_block)
    engine = open_engine(conn, engine_name)
    items = _files(tmp_path)
    try:
        result = upload_files(
            engine, bucket, items[:2], in_flight=2, options=UploadOptions(cache_control="no-store")
        )
    finally:
        engine.close()
    assert result.failed == {}
    client = rclone_s3.client()
    head = client.head_object(Bucket=bucket, Key="p/index.html")
    # rclone would say "text/html; charset=utf-8" itself: this is what was sent.
    assert (head["ContentType"], head.get("CacheControl")) == ("text/html", "no-store")
    head = client.head_object(Bucket=bucket, Key="p/data.json")
    assert head["ContentType"] == "application/json"


def test_module_reads_no_file() -> None:
    assert object_headers._TYPES.guess_type("a.html")[0] == "text/html"


def test_flows_pass_the_options_to_their_uploads(moto_server, bucket_factory, tmp_path) -> None:
    src_bucket, dst_bucket = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(b"<p>1</p>")
    (tmp_path / "site" / "n.txt").write_bytes(b"3\n")
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    options = UploadOptions(storage_class="STANDARD_IA", cache_control="no-cache")
    up = upload_directory(str(tmp_path / "site"), f"s3://{src_bucket}/in", workers=2,
                          connection=conn, upload_options=options)  # fmt: skip
    assert up.objects == 2 and not up.failed
    done = square_objects(f"s3://{src_bucket}/in", f"s3://{dst_bucket}/out", workers=2,
                          include=["*.txt"], connection=conn, upload_options=options)  # fmt: skip
    assert done.uploaded == 1 and not done.failed
    client = moto_server.client()
    for bucket, key, content_type in ((src_bucket, "in/index.html", "text/html"),
                                      (dst_bucket, "out/n.txt", "text/plain")):  # fmt: skip
        head = client.head_object(Bucket=bucket, Key=key)
        assert (head["ContentType"], head.get("CacheControl")) == (content_type, "no-cache")
        assert head.get("StorageClass") == "STANDARD_IA"
