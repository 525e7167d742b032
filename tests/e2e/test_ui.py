"""The UI path, in a real browser: Prefect UI -> Custom run -> served deployment -> S3 outputs.

A Prefect server runs on a free 127.0.0.1 port with its own PREFECT_HOME; the deployment is
served from prefect.yaml with ``python -m deployments.serve``; headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright) fills in the run form with custom parameters,
including the S3 endpoint, which the served process does not otherwise know. The run must
reach Completed, its outputs must be right in the S3 server, and the page must not make a
single request that leaves the Prefect server.

Runs the squaring pipeline's deployment when prefect.yaml has one, else the upload one.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect_processes import (
    REPO,
    PrefectServer,
    serve_deployments,
    wait_for,
    wait_for_deployment,
    wait_for_final_state,
)

from prefect_s3_concurrency.deployments.serve import PREFECT_YAML

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DEPLOYMENTS = yaml.safe_load((ROOT / PREFECT_YAML).read_text(encoding="utf-8"))["deployments"]
PIPELINE = next((d for d in DEPLOYMENTS if "square_objects" in d["entrypoint"]), None)
TARGET = PIPELINE or next(d for d in DEPLOYMENTS if "upload_directory" in d["entrypoint"])
INPUTS = {  # pipeline input objects: key -> body
    "a.txt": b"1\n-2\n3\n",
    "nested/crlf.txt": b"12\r\n-0\r\n+7",
    "nested/big.txt": b"-" + b"9" * 300 + b"\n" + b"1" * 1000 + b"\n",
    "empty.txt": b"",
}


def expected_square(body: bytes) -> bytes:
    """What squaring ``body`` must give: one ``\\n``-terminated square per input line."""
    return b"".join(b"%d\n" % (int(line) ** 2) for line in body.splitlines())


def sync_playwright() -> Any:
    """Playwright's entry point, or skip (with the reason) when the browser stack is missing."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: `make test` installs Debian's chromium when run as root "
            "(apt-get install -y chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright as entry
    except ImportError as exc:
        pytest.skip(f"playwright is not importable ({exc}): pip install -e '.[dev]'")
    return entry()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of its own: on the one the other server tests share, the run served
    here completed but its logs never showed up (only in full runs; not found why yet)."""
    with PrefectServer(tmp_path_factory.mktemp("ui-prefect-home")) as own:
        yield own


def fill_parameter(page: Any, label: str, value: str) -> None:
    """Type ``value`` into the run form's field labelled ``label`` (innermost match).

    Top-level parameters are labelled by name, nested model fields by title ("Endpoint Url").
    """
    name = re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
    prop = page.locator(".schema-form-property").filter(
        has=page.locator(".schema-form-property__label", has_text=name)
    ).last
    nullable = prop.get_by_role("button", name="str", exact=True)
    if nullable.count():  # `str | None` fields start as None: switch them to text first
        nullable.first.click()
    field = prop.locator("textarea, input[type=number], input[type=text]").first
    field.fill(value)
    field.blur()


def run_logs(server: PrefectServer, flow_run_id: str, *wanted: str) -> list[str]:
    """The run's log messages once the API holds one containing each of ``wanted`` (the
    logs arrive in batches after the final state)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    def probe() -> list[str] | None:
        with server.client() as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        messages = [log.message for log in logs]
        return messages if all(any(w in m for m in messages) for w in wanted) else None

    return wait_for(probe, 90, f"the run's logs with {wanted}")


def summary_row(server: PrefectServer, flow_run_id: str, item: str) -> Any:
    """The value of row ``item`` in the table artifacts the flow run published."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with server.client() as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    rows = [r for a in artifacts if a.type == "table" for r in json.loads(a.data)]
    return next(r["value"] for r in rows if r["item"] == item)


def prepare_inputs(s3: Any, tmp_path: Path) -> tuple[dict[str, str], Any]:
    """Create the run's inputs; return the form values and a checker of the outputs."""
    bucket = s3.create_bucket(f"ui-{time.time_ns() % 10**9}")
    client = s3.client()
    if PIPELINE is not None:
        for key, body in INPUTS.items():
            client.put_object(Bucket=bucket, Key=f"in/{key}", Body=body)
        values = {"source": f"s3://{bucket}/in", "dest": f"s3://{bucket}/out", "workers": "3",
                  "min_process_mib": "0"}  # fmt: skip  # square on worker processes even so
        want = {f"out/{k}": expected_square(v) for k, v in INPUTS.items()}
        prefix = "out/"
    else:
        source = tmp_path / "outgoing"
        for key, body in INPUTS.items():
            (source / key).parent.mkdir(parents=True, exist_ok=True)
            (source / key).write_bytes(body)
        values = {"source_dir": str(source), "dest": f"s3://{bucket}/ui", "workers": "3"}
        want = {f"ui/{k}": v for k, v in INPUTS.items()}
        prefix = "ui/"

    def check() -> None:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        got = {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
               for o in listing}  # fmt: skip
        assert got == want

    return values, check


def test_run_triggered_from_the_ui_completes(
    server: PrefectServer, rclone_s3: Any, tmp_path: Path
) -> None:
    playwright_cm = sync_playwright()
    values, check_outputs = prepare_inputs(rclone_s3, tmp_path)
    values["Endpoint Url"] = rclone_s3.endpoint_url  # connection.endpoint_url: only the form
    # knows where S3 is (nested fields are labelled by their titles)
    creds = {k: v for k, v in rclone_s3.env().items() if not k.startswith("AWS_ENDPOINT_URL")}
    serving = serve_deployments(
        server, ["--name", TARGET["name"]], tmp_path / "serve.log", extra_env=creds
    )
    timings = {"server start-up s": server.startup_seconds}
    outside: list[str] = []
    inside: list[str] = []
    try:
        from prefect.flows import load_flow_from_entrypoint

        from prefect_s3_concurrency.deployments.serve import load_specs

        (spec,) = load_specs(ROOT / PREFECT_YAML, names=[TARGET["name"]])
        flow_name = load_flow_from_entrypoint(str(REPO / spec.entrypoint)).name
        deployment = wait_for_deployment(server, f"{flow_name}/{TARGET['name']}", serving)
        timings["serve registration s"] = time.monotonic() - serving.started

        with playwright_cm as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def guard(route: Any) -> None:
                if route.request.url.startswith(server.url + "/"):
                    inside.append(route.request.url)
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("websocket", lambda ws: None if ws.url.startswith(
                server.url.replace("http", "ws", 1) + "/") else outside.append(ws.url))
            page.goto(f"{server.url}/deployments/deployment/{deployment.id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run", exact=True).click()
            page.wait_for_url(re.compile(r".*/run(\?.*)?$"))
            for label, value in values.items():
                fill_parameter(page, label, value)
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator(".schema-form-property").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "ui-run-form.png"))  # the filled form
            with page.expect_response(
                lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST"
            ) as created:
                page.get_by_role("button", name="Submit", exact=True).click()
            assert created.value.ok, created.value.text()
            flow_run_id = created.value.json()["id"]
            clicked = time.monotonic()
            final = wait_for_final_state(server, flow_run_id, timeout=240)
            timings["UI-triggered run (Submit to final state) s"] = time.monotonic() - clicked
            logged = run_logs(server, flow_run_id, "Beginning flow run", "Finished in state")
            page.goto(f"{server.url}/runs/flow-run/{flow_run_id}")
            page.get_by_text(final.state.name).first.wait_for(timeout=30_000)  # rendered
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"ui-run-{final.state.name.lower()}.png"  # ui-run-completed.png
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        serving.stop()
    (ARTIFACTS / "ui-timings.json").write_text(
        json.dumps({"deployment": TARGET["name"], **{k: round(v, 2) for k, v in timings.items()}})
    )
    print(f"\nUI test timings ({TARGET['name']}): {timings}")
    assert final.state.is_completed(), f"{final.state}\n{serving.log_tail()}"
    assert final.parameters["dest"] == values["dest"]  # the form's values reached the run
    assert any(f"Beginning flow run '{final.name}'" in m for m in logged), logged[:5]
    assert final.parameters["connection"]["endpoint_url"] == rclone_s3.endpoint_url
    if PIPELINE is not None:  # squaring ran on worker processes of the served run
        assert summary_row(server, flow_run_id, "processes used") is True
    assert outside == [], f"the UI tried to leave the server: {outside}"
    assert any("/create_flow_run" in url for url in inside)  # the guard saw the page's traffic
    check_outputs()
