"""Prometheus plumbing both services use: one collector registry per app, the exposition
of a scrape (summed over every worker in multiprocess mode), and cheap labelled children.

Metrics are objects of an app, not module globals: tests start many apps in one process,
and a worker must create its metrics after the supervisor chose multiprocess mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
