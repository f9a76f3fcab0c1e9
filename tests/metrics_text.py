"""Reading Prometheus' text format in tests (prometheus-client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, metric: str, /, **labels: str) -> float:
    """The sum of the samples called ``metric`` whose labels include ``labels`` (0 when none)."""
    return sum(
        sample.value
        for sample in samples(text)
        if sample.name == metric and all(sample.labels.get(key) == wanted for key, wanted in labels.items())
    )


def label_values(text: str, label: str) -> set[str]:
    """Every value ``label`` takes in ``text``."""
    return {sample.labels[label] for sample in samples(text) if label in sample.labels}
