"""FaultProxy: byte-exact relaying, each fault kind, and boto3 surviving injected faults."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ResponseStreamingError,
)
from faultproxy import FAULT_KINDS, FaultProxy

from prefect_s3_concurrency.s3.local_server import LocalS3Server

BODY_ERRORS = (ResponseStreamingError, IncompleteReadError)  # short or reset GET bodies


class _Echo(BaseHTTPRequestHandler):
    """Tiny upstream: GET /bytes/<n>, GET /chunked, and PUT/POST echoing a body digest."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = bytes(range(256)) * (int(self.path.rsplit("/", 1)[1]) // 256)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size + 2)[:-2]
            self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {"sha256": hashlib.sha256(data).hexdigest(), "host": self.headers["Host"]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(server: LocalS3Server, endpoint: str, **config: Any) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


def _no_retries(server: LocalS3Server, proxy: FaultProxy) -> Any:
    return _client(
        server, proxy.endpoint_url, retries={"mode": "standard", "total_max_attempts": 1}
    )


def _get(client: Any, bucket: str, key: str, attempts: int = 6) -> bytes:
    """get_object + read, retrying short bodies (botocore does not retry stream errors)."""
    for attempt in range(attempts):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except BODY_ERRORS:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def test_fault_free_round_trip_is_byte_identical(
    rclone_s3: LocalS3Server, bucket_factory, tmp_path: Path
) -> None:
    bucket = bucket_factory(rclone_s3)
    objects = {
        "empty": b"",
        "small.txt": b"hello",
        "odd key +%#?/ünï 😀.bin": os.urandom(1000),
        "one-mib.bin": os.urandom(2**20),
    }
    big = os.urandom(20 * 2**20)
    (tmp_path / "big").write_bytes(big)
    with FaultProxy(rclone_s3.endpoint_url, fault_rate=0.0) as proxy:
        client = _no_retries(rclone_s3, proxy)
        for key, data in objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=data)
        client.upload_file(str(tmp_path / "big"), bucket, "big")  # SigV4 multipart via proxy
        for key, data in objects.items():
            assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        client.download_file(bucket, "big", str(tmp_path / "big.out"))
        listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
        stats = proxy.stats
    assert (tmp_path / "big.out").read_bytes() == big
    assert listed == {*objects, "big"}
    direct = rclone_s3.client()
    for key, data in objects.items():
        assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert stats["injected"] == 0 and stats["requests"] == stats["forwarded"] >= 12
    assert stats["connections"] < stats["requests"]  # keep-alive is honoured


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("500", 500, "InternalError"),
        ("503", 503, "ServiceUnavailable"),
        ("slowdown", 503, "SlowDown"),
    ],
)
def test_http_error_faults(
    rclone_s3: LocalS3Server, bucket_factory, kind: str, status: int, code: str
) -> None:
    bucket = bucket_factory(rclone_s3)
    with FaultProxy(rclone_s3.endpoint_url, fault_rate=1.0, kinds=[kind]) as proxy:
        client = _no_retries(rclone_s3, proxy)
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=bucket, Key="faulted", Body=b"data")
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        with pytest.raises(ClientError, match=str(status)):  # HEAD: status only, no body
            client.head_bucket(Bucket=bucket)
        assert proxy.stats[kind] == 2 and proxy.stats["forwarded"] == 0
        proxy.fault_rate = 0  # changed at run time; the connection is still usable
        client.put_object(Bucket=bucket, Key="ok", Body=b"data")
    direct = rclone_s3.client()
    with pytest.raises(ClientError, match="404"):  # the faulted PUT never reached rclone
        direct.head_object(Bucket=bucket, Key="faulted")
    assert direct.get_object(Bucket=bucket, Key="ok")["Body"].read() == b"data"


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_connection_faults_seen_by_botocore(
    rclone_s3: LocalS3Server, bucket_factory, kind: str
) -> None:
    bucket = bucket_factory(rclone_s3)
    data = os.urandom(100_000)
    rclone_s3.client().put_object(Bucket=bucket, Key="obj", Body=data)
    with FaultProxy(rclone_s3.endpoint_url, fault_rate=1.0, kinds=[kind], seed=3) as proxy:
        client = _no_retries(rclone_s3, proxy)
        response = client.get_object(Bucket=bucket, Key="obj")
        assert response["ContentLength"] == len(data)  # headers arrive, the body breaks
        with pytest.raises(ResponseStreamingError) as info:
            response["Body"].read()
        if kind == "truncate":
            assert "IncompleteRead" in str(info.value)
        with pytest.raises(ConnectionClosedError):  # no body: closed before any response
            client.head_object(Bucket=bucket, Key="obj")
        assert proxy.stats[kind] == 2


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_raw_partial_body_with_correct_content_length(echo_url: str, kind: str) -> None:
    with FaultProxy(echo_url, fault_rate=1.0, kinds=[kind]) as proxy:
        port = int(proxy.endpoint_url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/bytes/65536")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "65536"
        expected = (ConnectionResetError, http.client.IncompleteRead)
        with pytest.raises(expected if kind == "reset" else http.client.IncompleteRead):
            response.read()
        conn.close()


def test_chunked_bodies_and_host_header_pass_through(echo_url: str) -> None:
    with FaultProxy(echo_url) as proxy:
        host = proxy.endpoint_url.removeprefix("http://")
        conn = http.client.HTTPConnection(*host.split(":"), timeout=10)
        conn.request("PUT", "/up", body=iter([b"ab", b"", b"cd" * 5000]), encode_chunked=True)
        echoed = json.loads(conn.getresponse().read())
        assert echoed == {"sha256": hashlib.sha256(b"ab" + b"cd" * 5000).hexdigest(), "host": host}
        conn.request("GET", "/chunked")
        assert conn.getresponse().read() == b"hello chunked world"
        conn.request("GET", "/bytes/512")
        assert conn.getresponse().read() == bytes(range(256)) * 2
        conn.close()
        assert proxy.stats["connections"] == 1 and proxy.stats["requests"] == 3


def _fault_sequence(echo_url: str, seed: int) -> list[str]:
    with FaultProxy(echo_url, fault_rate=0.5, seed=seed, kinds=["500", "503", "slowdown"]) as p:
        conn = http.client.HTTPConnection(*p.endpoint_url[7:].split(":"), timeout=10)
        seq = []
        for _ in range(40):
            conn.request("GET", "/bytes/256")
            response = conn.getresponse()
            response.read()
            seq.append(response.getheader("x-fault-proxy") or "ok")
        conn.close()
        return seq


def test_seeded_faults_are_reproducible(echo_url: str) -> None:
    first = _fault_sequence(echo_url, seed=42)
    assert first == _fault_sequence(echo_url, seed=42)
    assert first != _fault_sequence(echo_url, seed=43)
    assert {"ok", "500", "503", "slowdown"} <= set(first)


def test_key_filter_always_fail_keys_and_latency(rclone_s3: LocalS3Server, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3)
    flaky = lambda target: target.startswith(f"{bucket}/flaky/")  # noqa: E731
    with FaultProxy(rclone_s3.endpoint_url, fault_rate=1.0, kinds=["500"], key_filter=flaky) as p:
        client = _no_retries(rclone_s3, p)
        client.put_object(Bucket=bucket, Key="fine/a", Body=b"a")
        with pytest.raises(ClientError, match="InternalError"):
            client.put_object(Bucket=bucket, Key="flaky/b", Body=b"b")
        p.fault_rate, p.always_fail_keys, p.always_fail_kind = 0.0, {f"{bucket}/bad"}, "403"
        with pytest.raises(ClientError, match="AccessDenied"):
            client.put_object(Bucket=bucket, Key="bad", Body=b"x")
        client.put_object(Bucket=bucket, Key="flaky/b", Body=b"b")
        p.always_fail_keys = set()
        client.put_object(Bucket=bucket, Key="bad", Body=b"x")
        p.latency_s = 0.3
        started = time.monotonic()
        assert client.get_object(Bucket=bucket, Key="bad")["Body"].read() == b"x"
        assert time.monotonic() - started >= 0.3
        assert p.stats["500"] == 1 and p.stats["403"] == 1
    with pytest.raises(ValueError):
        p.kinds = ["bogus"]


def test_boto3_survives_30_percent_faults(rclone_s3: LocalS3Server, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3)
    payloads = {f"obj/{i:03d}.bin": os.urandom(1000 + 97 * i) for i in range(50)}
    with FaultProxy(rclone_s3.endpoint_url, fault_rate=0.3, seed=7) as proxy:
        client = _client(
            rclone_s3,
            proxy.endpoint_url,
            retries={"mode": "standard", "max_attempts": 10},
            max_pool_connections=16,
        )

        def round_trip(item: tuple[str, bytes]) -> bool:
            key, data = item
            client.put_object(Bucket=bucket, Key=key, Body=data)
            return _get(client, bucket, key) == data

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(round_trip, payloads.items()))
        stats = proxy.stats
    assert stats["requests"] >= 100 and stats["injected"] >= 15
    assert all(stats[kind] > 0 for kind in FAULT_KINDS), stats
    direct = rclone_s3.client()
    for key, data in payloads.items():
        assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_stop_is_idempotent(echo_url: str) -> None:
    proxy = FaultProxy(echo_url).start()
    assert proxy.endpoint_url.startswith("http://127.0.0.1:")
    proxy.stop()
    proxy.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.endpoint_url
    with pytest.raises(ValueError):
        FaultProxy("https://example.invalid")
