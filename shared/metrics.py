"""Prometheus plumbing both services use: one collector registry per app, the exposition
of a scrape (summed over every worker in multiprocess mode), cheap labelled children, and
the directory through which the workers of ``--workers N`` add up to one scrape.

Metrics are objects of an app, not module globals: tests start many apps in one process,
and a worker must create its metrics after the supervisor chose multiprocess mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)

Child = TypeVar("Child")


def metrics_path(value: str) -> str:
    """Check a configured metrics path (``http.debug.prometheus.path``): a route path."""
    if not value.startswith("/") or any(c in value for c in "?#{}") or not value.isprintable():
        raise ValueError("expected a path starting with '/' (no query, fragment or braces)")
    return value


def multiprocess_dir() -> str | None:
    """The directory every worker writes its samples to, or None (single process)."""
    return os.environ.get(MULTIPROC_ENV) or None


def use_multiprocess_dir(path: str) -> None:
    """Make metrics created from now on write to ``path`` (before forking workers).

    prometheus-client chooses its value class when it is first imported, from the
    environment; the supervisor sets the directory later, so the choice is made again.
    """
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry, *, multiprocess: bool = True) -> tuple[bytes, str]:
    """The text a scrape returns and its content type: in multiprocess mode the sum over
    every process that wrote to the directory (dead ones included, so counters of a
    replaced worker do not go backwards), else ``registry``'s own samples.

    ``multiprocess=False``: a service that is always one process (tokenauth)."""
    path = multiprocess_dir() if multiprocess else None
    if path is not None:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class LabelCache(Generic[Child]):
    """The children of one labelled metric, by label values, looked up without the
    metric's lock (``labels()`` takes it on every call; the hot path calls this one).

    Callers pass only values from bounded sets (route names, methods, statuses): a label
    taken from a client's text would let a client grow the scrape without bound.
    """

    def __init__(self, labels: Callable[..., Child]) -> None:
        self._labels = labels
        self._children: dict[tuple[str, ...], Child] = {}

    def __call__(self, *values: str) -> Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child


@contextlib.contextmanager
def worker_samples(enabled: bool) -> Iterator[str | None]:
    """Around a supervisor's life: the multiprocess directory its workers write to.

    When metrics are on and the operator set no ``PROMETHEUS_MULTIPROC_DIR``, a fresh one is
    made before the workers are forked and removed at exit. One the operator set is used as
    it is (it must start empty: leftovers of another run would be added in) and kept.
    """
    if not enabled:
        yield None
        return
    given = multiprocess_dir()
    if given is not None:
        use_multiprocess_dir(given)
        yield given
        return
    path = tempfile.mkdtemp(prefix="portside-metrics-")
    use_multiprocess_dir(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_gone(directory: str | None, pid: int) -> None:
    """A worker exited: its live gauges leave the sum (its counters stay in it)."""
    if directory is not None:
        try:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except OSError as error:
            log.warning("could not drop the gauges of worker %d: %s", pid, error)
