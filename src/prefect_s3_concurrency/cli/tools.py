"""``prefect-s3`` commands around the flows: ``serve``, ``local-s3`` and ``bench``."""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter, validators

from prefect_s3_concurrency.cli.output import print_error, print_note
from prefect_s3_concurrency.cli.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from prefect_s3_concurrency.errors import ConfigurationError

BUCKET_HINT = (
    'create more buckets through the S3 API, e.g. python -c "import boto3; '
    "boto3.client('s3').create_bucket(Bucket='NAME')\" with the variables above exported "
    "(rclone caches directory listings, so a mkdir in the directory stays invisible while the "
    "server runs), or restart with --bucket NAME"
)


def serve(
    *,
    prefect_file: Annotated[
        str, Parameter(help="The prefect.yaml to read (default: the one in this directory).",
                       metavar="PATH")
    ] = "prefect.yaml",
    name: Annotated[
        list[str] | None,
        Parameter(help="Serve only this deployment (repeatable); default: all of them.",
                  negative="")
    ] = None,
    limit: Annotated[
        int | None, Parameter(help="Most flow runs at a time.", negative="", metavar="N")
    ] = None,
    list_: Annotated[
        bool, Parameter(name="--list", help="Print the deployments and exit.", negative="")
    ] = False,
) -> int:  # fmt: skip
    """Serve the deployments of prefect.yaml from this process, without a work pool.

    Registers them on the Prefect server of PREFECT_API_URL (with their schedules) and runs
    their flow runs as subprocesses until Ctrl-C. Trigger runs from the UI.
    """
    from prefect_s3_concurrency.cli.server import KEEP_RUNS_HINT, configured_api_url
    from prefect_s3_concurrency.deployments import serve as serving

    if not list_ and not configured_api_url():
        print_error(
            f"serve needs a Prefect server and PREFECT_API_URL is not set: {KEEP_RUNS_HINT}"
        )
        return EXIT_USAGE
    argv = ["--prefect-file", prefect_file, *(a for n in name or () for a in ("--name", n))]
    argv += ["--limit", str(limit)] if limit is not None else []
    argv += ["--list"] if list_ else []
    try:
        serving.main(argv)
    except SystemExit as exc:  # serve.main exits with "error: ..." on a bad prefect.yaml
        if isinstance(exc.code, str):
            print_error(exc.code.removeprefix("error: "))
            return EXIT_USAGE
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs (main thread only)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


ENV_NAMES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _env_values(server: Any) -> dict[str, str]:
    values = (server.endpoint_url, server.access_key, server.secret_key, server.region)
    return dict(zip(ENV_NAMES, values, strict=True))


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file written by :func:`write_env_file` (if any)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (shlex.split(line)[0].split("=", 1) for line in lines if "=" in line)
    return {name: value for name, value in pairs if name in ENV_NAMES}


def write_env_file(path: Path, server: Any) -> None:
    """Write the server's endpoint and credentials (owner-readable only)."""
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in _env_values(server).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(text)
    os.replace(tmp, path)


def _print_server(server: Any, buckets: Sequence[str]) -> None:
    """Print where the server listens, its credentials and the environment to use it."""
    rows = [
        ("endpoint URL", server.endpoint_url), ("access key", server.access_key),
        ("secret key", server.secret_key), ("region", server.region),
        ("directory", str(server.root)), ("buckets created", ", ".join(buckets) or "none"),
    ]  # fmt: skip
    print("local S3 server (rclone serve s3), listening on 127.0.0.1 only:")
    for item, value in rows:
        print(f"  {item:<16} {value}")
    print("use it from a shell (copy and paste):")
    for name, value in _env_values(server).items():
        print(f"  export {name}={shlex.quote(value)}")
    print(BUCKET_HINT)
    print("press Ctrl-C to stop", flush=True)


def local_s3(
    directory: Annotated[
        str, Parameter(help="Directory to serve; its subdirectories are buckets.", metavar="DIR")
    ],
    /,
    *,
    bucket: Annotated[
        list[str] | None, Parameter(help="Create this bucket at start (repeatable).", negative="",
                                    metavar="NAME")
    ] = None,
    access_key: Annotated[str, Parameter(help="S3 access key id to accept.")] = "local-access-key",
    secret_key: Annotated[
        str | None, Parameter(help="S3 secret key to accept (default: a new random one).")
    ] = None,
    region: Annotated[str, Parameter(help="Region reported to clients.")] = "us-east-1",
    port: Annotated[
        int, Parameter(help="127.0.0.1 port to listen on (default: a free one).",
                       validator=validators.Number(gte=0, lte=65535))
    ] = 0,
    env_file: Annotated[
        str | None, Parameter(help="Write the endpoint and credentials to this file, for "
                              "'set -a; . FILE; set +a'; when it exists, reuse its port and "
                              "secret key (the same credentials across restarts).",
                              metavar="FILE")
    ] = None,
) -> int:  # fmt: skip
    """Serve a local directory over S3 on 127.0.0.1 (rclone serve s3) until Ctrl-C.

    For trying the flows, serve and deploy with no cloud account: prints the endpoint URL, the
    credentials and the environment variables to export.
    """
    from prefect_s3_concurrency.local.paths import parse_s3_url
    from prefect_s3_concurrency.s3.local_server import LocalS3Server

    try:
        for name in bucket or ():
            parse_s3_url(f"s3://{name}")
        saved = read_env_file(Path(env_file)) if env_file else {}
        secret_key = secret_key or saved.get("AWS_SECRET_ACCESS_KEY")
        port = port or int(saved.get("AWS_ENDPOINT_URL", ":0").rsplit(":", 1)[1] or 0)
        server = LocalS3Server(Path(directory).expanduser().resolve(), access_key, secret_key,
                               region, port=port)  # fmt: skip
        server.start()
        if env_file:
            write_env_file(Path(env_file), server)
    except (ConfigurationError, ValueError, RuntimeError, OSError) as exc:
        print_error(str(exc).splitlines()[0])
        return EXIT_USAGE
    try:
        with _stop_on_sigterm():
            for name in bucket or ():
                server.create_bucket(name)
            _print_server(server, bucket or [])
            if env_file:
                print(f"or load them from {env_file}: set -a; . {shlex.quote(env_file)}; set +a",
                      flush=True)  # fmt: skip
            stopped = threading.Event()
            while server.running and not stopped.wait(1.0):
                pass
        print_error("the S3 server stopped unexpectedly")
        return EXIT_FAILED
    except KeyboardInterrupt:
        print_note("stopping the S3 server")
        return EXIT_OK
    finally:
        server.stop()


def _benchmarks() -> Any | None:
    """Import ``benchmarks.__main__`` from the working directory (a repository checkout)."""
    cwd = Path.cwd()
    if (cwd / "benchmarks" / "__main__.py").is_file() and str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        return importlib.import_module("benchmarks.__main__")
    except ImportError:
        return None


def bench(
    *,
    only: Annotated[
        list[str] | None, Parameter(help="Run only this benchmark (repeatable): transfer, "
                                    "cpu_pipeline.", negative="", metavar="NAME")
    ] = None,
    out_dir: Annotated[
        str | None, Parameter(help="Where to write the JSON and PNG results "
                              "(default: benchmarks/results).", metavar="DIR")
    ] = None,
) -> int:  # fmt: skip
    """Run the project's benchmarks (python -m benchmarks) from a repository checkout.

    The benchmarks are not installed with the package: run this in the repository's root
    directory, where the benchmarks folder is.
    """
    module = _benchmarks()
    if module is None or not hasattr(module, "main"):
        print_error("the benchmarks are not installed with the package: run prefect-s3 bench in "
                    "a checkout of the repository (the directory holding benchmarks/)")  # fmt: skip
        return EXIT_USAGE
    unknown = sorted(set(only or ()) - set(getattr(module, "MODULES", ())))
    if unknown:
        print_error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(module.MODULES)}")
        return EXIT_USAGE
    argv = ["--only", *only] if only else []
    argv += ["--out-dir", out_dir] if out_dir else []
    return int(module.main(argv))


def register(app: App) -> None:
    """Add ``serve``, ``local-s3``, ``bench`` and ``server`` to ``app``."""
    from prefect_s3_concurrency.cli.server import server_app

    app.command(server_app)
    app.command(serve)
    app.command(local_s3, name="local-s3")
    app.command(bench)
