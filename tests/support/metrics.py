"""Reading a Prometheus scrape in tests: fetch the text page and look samples up."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape: (name, sorted labels) → value."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    # Every metric the page declares, with its sample suffixes (_total, _bucket...),
    # those without any sample yet included.
    families: frozenset[str] = frozenset()

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in self.samples.items()
            if sample == name and wanted <= set(sample_labels)
        )

    def label_values(self, label: str) -> set[str]:
        return {v for (_, labels), _ in self.samples.items() for k, v in labels if k == label}


def parse(text: str) -> Scrape:
    samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return Scrape(samples, frozenset(families))


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())
