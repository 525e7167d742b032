"""A request budget shared by every run: a Prefect global concurrency limit (GCL).

``prefect gcl create s3-prod --limit 64`` makes one; runs that name it (``request_budget``,
``--request-budget``) together keep at most 64 S3 requests in flight, on any worker, Dask
process or machine that reaches the same Prefect API. A batch task takes as many slots as
it may have requests in flight, once, on a lease (:func:`held`): its pacer
(:mod:`s3.pacing`) then never lets more requests out than it holds (ranged and multipart
parts, HEADs, the multipart sweep's list and abort included). The lease is renewed while
the batch runs; a run killed outright gives its slots back when the lease runs out
(:data:`LEASE_SECONDS`, the server's shortest, plus its repossessor's pass).

A limit with slot decay (``--slot-decay-per-second R``) is a rate: each batch takes its
slots the same way, and they come back at ``R`` a second even while it holds them, so
``R`` bounds how many slots are handed out a second (see docs/sharing-s3.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from prefect_s3_concurrency.errors import ConfigurationError, printable

LEASE_SECONDS = 60.0  # the Prefect API's shortest lease; renewed while a batch runs
RequestBudgetName = Annotated[
    str | None,
    Field(
        description="A Prefect global concurrency limit (`prefect gcl create NAME --limit K`) "
        "that bounds the S3 requests in flight of every run naming it.",
    ),
]


@dataclass(frozen=True)
class RequestBudget:
    """The limit a run's batches take slots of, and how many each takes."""

    name: str
    slots: int
    limit: int
    per_second: float = 0.0  # the limit's slot decay (0: a plain concurrency limit)


def resolve_budget(name: str | None, slots: int) -> RequestBudget | None:
    """Check that the limit ``name`` exists and fit ``slots`` (a batch's) into it.

    One API call per run; None (and no call) without a name.

    Raises:
        ConfigurationError: If the limit does not exist or is inactive.
    """
    if not name:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            found = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        raise ConfigurationError(
            f"request budget '{printable(name)}' does not exist: create it with "
            f"`prefect gcl create {printable(name)} --limit 64`"
        ) from None
    if not found.active or found.limit < 1:
        raise ConfigurationError(f"request budget '{printable(name)}' is inactive")
    decay = float(found.slot_decay_per_second or 0.0)
    return RequestBudget(name, max(1, min(slots, found.limit)), found.limit, decay)


@contextlib.contextmanager
def held(budget: RequestBudget | None) -> Iterator[int | None]:
    """Hold the batch's slots of ``budget`` on a lease while the body runs.

    Yields:
        How many requests the batch may have in flight (None: no budget, no API call).
    """
    if budget is None:
        yield None
        return
    from prefect.concurrency.sync import concurrency

    # A renewal that fails once (the API restarting) must not kill a transfer half done: the
    # batch goes on, and at worst its slots are revoked early.
    with concurrency(
        budget.name, occupy=budget.slots, lease_duration=LEASE_SECONDS, strict=True,
        raise_on_lease_renewal_failure=False,
    ):  # fmt: skip
        yield budget.slots
