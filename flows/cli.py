"""A small command line for the flows, built from their signatures (argparse, no extra deps).

Every flow becomes a sub-command: required parameters are positional, the rest are
``--options``; list parameters repeat (``--include '*.csv' --include '*.txt'``), and the
:class:`~tasks.client.S3Connection` fields are flattened (``--endpoint-url``, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from prefect.exceptions import ParameterTypeError
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from prefect_s3_concurrency.tasks.client import S3Connection
from prefect_s3_concurrency.tasks.errors import S3PipelineError, describe_error, printable
from prefect_s3_concurrency.tasks.watchdog import start_watchdog


def _default(param: inspect.Parameter) -> Any:
    default = param.default
    if isinstance(default, FieldInfo):
        return default.get_default(call_default_factory=True)
    return default


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or annotation is list


def _base_type(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else str
        else:
            return annotation


def _add_flow(sub: Any, name: str, flow_obj: Any) -> None:
    fn = flow_obj.fn
    hints = typing.get_type_hints(fn, include_extras=True)
    doc = (inspect.getdoc(fn) or "").splitlines()[0]
    parser = sub.add_parser(name, help=doc, description=inspect.getdoc(fn))
    parser.set_defaults(_flow=flow_obj)
    for pname, param in inspect.signature(fn).parameters.items():
        ann = _base_type(hints.get(pname, str))
        default = _default(param)
        opt = "--" + pname.replace("_", "-")
        if ann is S3Connection:
            for field_name, field in S3Connection.model_fields.items():
                parser.add_argument(
                    "--" + field_name.replace("_", "-"),
                    dest=f"conn__{field_name}",
                    type=int if field.annotation is int else str,
                    help=field.description,
                )
        elif default is inspect.Parameter.empty:
            parser.add_argument(pname, type=str)
        elif ann is bool:
            parser.add_argument(opt, action=argparse.BooleanOptionalAction, default=default)
        elif _is_list(ann):
            parser.add_argument(opt, action="append", default=None, help="repeatable")
        else:
            py_type = ann if ann in (int, float, str) else str
            parser.add_argument(opt, type=py_type, default=default, help=f"default: {default}")


def build_parser(flows: Sequence[Any]) -> argparse.ArgumentParser:
    """Return an argparse parser with one sub-command per flow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--heartbeats", action="store_true", help="send flow-run heartbeats (off for CLI runs)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for flow_obj in flows:
        _add_flow(sub, flow_obj.name, flow_obj)
    return parser


def parse_flow_args(flows: Sequence[Any], argv: Sequence[str] | None = None) -> tuple[Any, dict]:
    """Parse ``argv`` into a flow and its keyword arguments."""
    args = vars(build_parser(flows).parse_args(argv))
    flow_obj = args.pop("_flow")
    args.pop("command")
    args.pop("json")
    args.pop("heartbeats")
    conn = {k[6:]: v for k, v in list(args.items()) if k.startswith("conn__") and v is not None}
    kwargs = {k: v for k, v in args.items() if not k.startswith("conn__") and v is not None}
    if conn:
        kwargs["connection"] = S3Connection(**conn)
    return flow_obj, kwargs


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


def run_cli(*flows: Any, argv: Sequence[str] | None = None) -> None:
    """Run the chosen flow and print its summary; exit 1 with a one-line error on failure."""
    args = list(argv if argv is not None else sys.argv[1:])
    want_json = "--json" in args
    flow_obj, kwargs = parse_flow_args(flows, args)
    start_watchdog()  # a SIGKILL of this process must not leave its server or workers alive
    try:
        with local_run_settings(heartbeats="--heartbeats" in args):
            result = flow_obj(**kwargs)
    except ParameterTypeError as exc:  # "invalid parameters:\n - workers: ..." -> one line
        print(f"error: {describe_error(exc).partition(': ')[2]}", file=sys.stderr)
        raise SystemExit(1) from None
    except S3PipelineError as exc:  # one line by design: any line break came from a key
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as exc:
        print(f"error: {printable(str(exc).splitlines()[0])}", file=sys.stderr)
        raise SystemExit(1) from None
    if isinstance(result, BaseModel):
        if want_json:
            print(result.model_dump_json(indent=2))
        elif hasattr(result, "rows"):
            for row in result.rows():
                print(f"{printable(row['item']):>32}: {printable(row['value'])}")
    else:
        print(json.dumps(result, default=str, indent=2))
