"""Prometheus text for tests: samples by (name, labels), and exported-or-not.

A sample that is absent reads as 0 only when its metric is exported at all (a labelled
counter has no sample until first incremented). A metric that is not exported is an
error: an ``== 0`` check would otherwise pass for a renamed or missing metric.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

_SUFFIXES = ("", "_total", "_created", "_count", "_sum", "_bucket", "_info")


class Samples(dict):
    """``{(sample name, frozenset(labels)): value}`` plus the names the text exports."""

    names: set[str]


def parse(text: str) -> Samples:
    """Parse Prometheus text format."""
    samples = Samples()
    samples.names = set()
    for family in text_string_to_metric_families(text):
        samples.names.update(family.name + suffix for suffix in _SUFFIXES)
        for sample in family.samples:
            samples.names.add(sample.name)
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample; 0 when the metric is exported without this label set.

    Raises:
        AssertionError: the metric is not exported at all.
    """
    key = (name, frozenset(labels.items()))
    if key in samples:
        return samples[key]
    names = getattr(samples, "names", None)
    if names is not None and name not in names:
        raise AssertionError(f"{name} is not exported")
    return 0.0
