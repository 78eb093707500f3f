"""The /metrics endpoint (Prometheus), for one process or all `--workers` together.

Each module defines the metrics it updates (HTTP and GraphQL operations in
`server.observe`, the response cache in `server.response_cache`, events in
`resolvers.unit_of_work` and `subscriptions.group`, …); docs/operations.md lists them.

With `concord serve --workers N` every worker writes its metrics to files in
`PROMETHEUS_MULTIPROC_DIR` (set up by the CLI before the workers start, see
`server.cli`), and whichever worker answers the scrape reads all of them: counters and
histograms are summed over the workers, gauges over the live ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from models.breaker import STATE_VALUES, Breaker

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class BreakerStates(Collector):
    """`concord_breaker_state{name}`, read from each breaker at scrape time.

    A collector rather than a Gauge: a breaker's state changes by itself (open becomes
    half-open when due), and with `--workers` no metric file is written for it: the
    scrape reports the breakers of the worker that answers it.
    """

    def __init__(self) -> None:
        self.breakers: dict[str, Breaker] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "concord_breaker_state",
            "Circuit breaker state: 0 closed, 1 open (calls fail at once), 2 half-open "
            "(one trial).",
            labels=["name"],
        )
        for name, breaker in self.breakers.items():
            family.add_metric([name], STATE_VALUES[breaker.state])
        yield family


BREAKER_STATES = BreakerStates()
REGISTRY.register(BREAKER_STATES)


def watch_breaker(breaker: Breaker) -> None:
    """Report `breaker`'s state as concord_breaker_state{name=…} (the latest app's)."""
    BREAKER_STATES.breakers[breaker.name] = breaker


def _registry() -> CollectorRegistry:
    if not os.environ.get(MULTIPROC_DIR):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(BREAKER_STATES)
    return registry


async def metrics(request: Request) -> Response:
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


@contextlib.contextmanager
def worker_metrics_dir() -> Iterator[Path]:
    """`PROMETHEUS_MULTIPROC_DIR` for the workers of one `concord serve --workers N`.

    The operator's directory when set (its metric files from an earlier run are removed
    first, as prometheus_client requires), else a new temporary one, removed at the end.
    Set in the environment before the workers start, so that each imports
    prometheus_client in multiprocess mode.
    """
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        clear_earlier_runs(path)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="concord-metrics-"))
    os.environ[MULTIPROC_DIR] = str(path)
    try:
        yield path
    finally:
        del os.environ[MULTIPROC_DIR]
        shutil.rmtree(path, ignore_errors=True)


def clear_earlier_runs(path: Path) -> None:
    """Remove the metric files of other processes (an earlier run's) from `path`.

    This process's own files stay: it may have written some already (any import of a
    module defining metrics does), and they are open.
    """
    own = f"_{os.getpid()}.db"
    for stale in path.glob("*.db"):
        if not stale.name.endswith(own):
            stale.unlink(missing_ok=True)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def forget_dead_workers() -> None:
    """Drop the live gauges (sockets, subscriptions, pool) of workers that have died.

    A worker that crashed could not remove its files; its replacement does, at start.
    """
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's
