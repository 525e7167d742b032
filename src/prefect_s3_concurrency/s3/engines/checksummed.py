"""Uploads with checksums that S3 verifies before it stores the bytes (through botocore).

* A single PUT carries ``Content-MD5`` and ``x-amz-checksum-crc64nvme``.
* A multipart upload is created with ``ChecksumAlgorithm=CRC64NVME``,
  ``ChecksumType=FULL_OBJECT``; each part carries its CRC64NVME, and
  ``CompleteMultipartUpload`` the whole object's, combined from the parts' CRCs
  (``combine_crc64nvme``, no second read). S3 answers a corrupted part or a wrong total with
  400 (``BadDigest``) instead of storing it. Just before completing, the caller's
  ``unchanged`` check refuses a file rewritten while it uploaded.

Servers without the newer checksums are learned once per endpoint: one that refuses them
(``InvalidRequest``, ``NotImplemented``, ``InvalidArgument``) or ignores them (no checksum
echoed back, e.g. ``rclone serve s3``) gets ``Content-MD5`` per part from then on; until an
endpoint has echoed a CRC, parts carry both.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from prefect_s3_concurrency.errors import IntegrityError
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.engines.base import PutReply
from prefect_s3_concurrency.s3.etag import ETag
from prefect_s3_concurrency.s3.integrity import Hashes, combine_all, crc_b64

if TYPE_CHECKING:
    from prefect_s3_concurrency.s3.engines.boto3_engine import Boto3Engine

ALGORITHM = "CRC64NVME"
_REFUSALS = {"InvalidRequest", "NotImplemented", "InvalidArgument", "501"}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _refused(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _REFUSALS


def _reply(resp: Mapping[str, Any]) -> PutReply:
    headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return PutReply(ETag.parse(resp.get("ETag")).value, {k.lower(): v for k, v in headers.items()})


def _learn(endpoint: str, echoed: str | None, sent: str) -> None:
    """Remember whether ``endpoint`` checks CRC64NVME (it echoes it); a different echo is a
    server that stored other bytes than those sent."""
    if echoed is None:
        caches.CRC_REFUSED.add(endpoint)
    elif echoed != sent:
        raise IntegrityError(f"the server stored a different CRC64NVME ({echoed}, sent {sent})")
    else:
        caches.CRC_ECHOED.add(endpoint)


def put_object(
    client: Any,
    bucket: str,
    key: str,
    data: bytes,
    md5: bytes,
    crc64: int,
    extra: Mapping[str, Any],
) -> PutReply:
    """PutObject with Content-MD5 and CRC64NVME (CRC left out where the endpoint refuses it).

    ``extra`` holds the other PutObject arguments (metadata, content type, encryption...).
    """
    endpoint = str(client.meta.endpoint_url)
    args = {"Bucket": bucket, "Key": key, "Body": data, "ContentMD5": _b64(md5), **extra}
    if endpoint not in caches.CRC_REFUSED:
        sent = crc_b64("crc64nvme", crc64)
        try:
            resp = client.put_object(**args, ChecksumAlgorithm=ALGORITHM, ChecksumCRC64NVME=sent)
        except ClientError as exc:
            if not _refused(exc):
                raise
            caches.CRC_REFUSED.add(endpoint)
        else:
            _learn(endpoint, resp.get("ChecksumCRC64NVME"), sent)
            return _reply(resp)
    return _reply(client.put_object(**args))


async def upload_multipart(
    engine: Boto3Engine,
    bucket: str,
    key: str,
    path: Path,
    shape: tuple[int, int],
    extra: Mapping[str, Any],
    unchanged: Callable[[], None],
) -> PutReply:
    """A multipart upload of ``path`` in ``shape = (part_size, concurrency)`` (see module).

    Raises:
        IntegrityError: If the file changed, or the server's checksums or ETag disagree.
    """
    client, endpoint = engine.client, engine.endpoint
    crc = endpoint not in caches.CRC_REFUSED
    args = {"Bucket": bucket, "Key": key, **extra}
    try:
        checked = {"ChecksumAlgorithm": ALGORITHM, "ChecksumType": "FULL_OBJECT"} if crc else {}
        created = await engine._call(lambda: client.create_multipart_upload(**args, **checked))
    except ClientError as exc:
        if not (crc and _refused(exc)):
            raise
        caches.CRC_REFUSED.add(endpoint)
        crc = False
        created = await engine._call(lambda: client.create_multipart_upload(**args))
    upload_id = created["UploadId"]
    try:
        parts = await _upload_parts(engine, args, upload_id, path, shape, crc)
        unchanged()
        done = await engine._call(lambda: _complete(client, args, upload_id, parts, crc))
    except BaseException:
        await engine.abort_upload(bucket, key, upload_id)
        raise
    reply = _reply(done)
    md5s = [md5 for _, _, md5 in parts if md5 is not None]
    tag = ETag.parse(reply.etag, reply.headers)
    if len(md5s) == len(parts) and tag.parts is not None and not tag.matches_multipart(md5s):
        raise IntegrityError(f"ETag mismatch after upload of {key}")
    return reply


def _complete(
    client: Any,
    args: Mapping[str, Any],
    upload_id: str,
    parts: list[tuple[dict[str, Any], Hashes, bytes | None]],
    crc: bool,
) -> Any:
    entries = [entry for entry, _, _ in parts]
    checked: dict[str, Any] = {}
    if crc and all("ChecksumCRC64NVME" in entry for entry in entries):
        total = crc_b64("crc64nvme", combine_all("crc64nvme", [h for _, h, _ in parts]))
        checked = {"ChecksumCRC64NVME": total, "ChecksumType": "FULL_OBJECT"}
    done = client.complete_multipart_upload(
        Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id,
        MultipartUpload={"Parts": entries}, **checked,
    )  # fmt: skip
    echoed = done.get("ChecksumCRC64NVME")
    if checked and echoed and echoed != checked["ChecksumCRC64NVME"]:
        raise IntegrityError(f"checksum mismatch after upload of {args['Key']}")
    return done


async def _upload_parts(
    engine: Boto3Engine,
    args: Mapping[str, Any],
    upload_id: str,
    path: Path,
    shape: tuple[int, int],
    crc: bool,
) -> list[tuple[dict[str, Any], Hashes, bytes | None]]:
    """Upload every part (``concurrency`` at a time): the Complete entries, CRCs and MD5s."""
    part_size, concurrency = shape
    size = path.stat().st_size
    count = max(1, -(-size // part_size))
    gate = asyncio.Semaphore(max(1, concurrency))
    endpoint = engine.endpoint

    def send(number: int) -> tuple[dict[str, Any], Hashes, bytes | None]:
        with open(path, "rb") as fh:  # one handle per part: a cancelled part owns its own
            fh.seek((number - 1) * part_size)
            data = fh.read(part_size)
        if len(data) != min(part_size, size - (number - 1) * part_size):
            raise IntegrityError(f"{path} changed while uploading: not stored")
        with_md5 = endpoint not in caches.CRC_ECHOED
        hashes = Hashes(md5=with_md5)
        hashes.update(data)
        kwargs: dict[str, Any] = {"ContentMD5": _b64(hashes.md5_digest())} if with_md5 else {}
        if crc:
            kwargs.update(ChecksumAlgorithm=ALGORITHM, ChecksumCRC64NVME=crc_b64(
                "crc64nvme", hashes.crc))  # fmt: skip
        resp = engine.client.upload_part(
            Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id, PartNumber=number,
            Body=data, **kwargs,
        )  # fmt: skip
        entry = {"PartNumber": number, "ETag": resp["ETag"]}
        if crc:
            _learn(endpoint, resp.get("ChecksumCRC64NVME"), kwargs["ChecksumCRC64NVME"])
            if resp.get("ChecksumCRC64NVME"):
                entry["ChecksumCRC64NVME"] = resp["ChecksumCRC64NVME"]
        return entry, hashes, hashes.md5_digest() if with_md5 else None

    async def one(number: int) -> tuple[dict[str, Any], Hashes, bytes | None]:
        async with gate:
            return await engine._call(send, number)

    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels the others
            tasks = [group.create_task(one(n)) for n in range(1, count + 1)]
    except BaseExceptionGroup as failed:  # the first error, one line, as callers expect it
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]
