"""What ``/metrics`` exposes to Prometheus (prometheus-client's text format).

Durations are histograms observed where the work happens (the scheduler's pass, a log sync, the
final copy of a run's files); they live in prometheus-client's process-wide registry, beside the
HTTP request metrics of litestar's Prometheus middleware. Counts of the present (the queue, runs by
status, GPUs free and used per node) are read at scrape time: a ``GROUP BY status`` that SQLite
answers from the ``runs(status)`` index, and the few rows of ``allocations`` (held by running runs
only), so a scrape stays cheap with any number of finished runs.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256

import sqlite_utils
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trainhub.nodes.pool import LOCAL, NodePool
from trainhub.runs.dispatch import usable_gpus
from trainhub.settings import Settings, metrics_allow_networks
from trainhub.store import nodes as node_store
from trainhub.store.lifecycle import RunStatus

SCHEDULING_PASS = Histogram(
    "trainhub_scheduling_pass_seconds",
    "One pass of the scheduler over the queue (read, place, claim)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOG_SYNC = Histogram(
    "trainhub_log_sync_seconds",
    "One copy of a running run's ./logs to the server",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTPUT_COPY = Histogram(
    "trainhub_output_copy_seconds",
    "The final copy of a run's ./outputs, ./logs and metrics to the server",
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)


@dataclass
class Present:
    """The counts of one scrape."""

    runs_by_status: dict[str, int]
    gpus_used: dict[str, int] = field(default_factory=dict)
    gpus_free: dict[str, int] = field(default_factory=dict)


def runs_by_status(db: sqlite_utils.Database) -> dict[str, int]:
    counts = {str(status): 0 for status in RunStatus}
    for status, count in db.execute("select status, count(*) from runs group by status"):
        counts[str(status)] = int(count)
    return counts


def gpus_held(db: sqlite_utils.Database) -> dict[str, set[int]]:
    held: dict[str, set[int]] = {}
    for row in node_store.allocations(db):
        held.setdefault(row["node"], set()).update(row["gpus"])
    return held


def gpu_counts(pool: NodePool, held: dict[str, set[int]], present: Present) -> None:
    """GPUs runs may be given on each node, split into those held and those free."""
    for name in [LOCAL, *pool.remotes]:
        usable = {
            g["index"] for g in pool.inventory(name).get("gpus", [])[: usable_gpus(pool, name)]
        }
        used = len(usable & held.get(name, set()))
        present.gpus_used[name] = used
        present.gpus_free[name] = len(usable) - used


class _PresentCollector(Collector):
    def __init__(self, present: Present) -> None:
        self.present = present

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status = self.present.runs_by_status
        yield GaugeMetricFamily(
            "trainhub_queue_length", "Runs waiting in the queue", value=by_status["Queued"]
        )
        runs = GaugeMetricFamily("trainhub_runs", "Runs by status", labels=["status"])
        for status, count in by_status.items():
            runs.add_metric([status], count)
        yield runs
        for state, counts in (("used", self.present.gpus_used), ("free", self.present.gpus_free)):
            family = GaugeMetricFamily(
                f"trainhub_gpus_{state}", f"GPUs {state} on each node", labels=["node"]
            )
            for node, count in counts.items():
                family.add_metric([node], count)
            yield family


def exposition(present: Present) -> bytes:
    """The process-wide metrics (durations, HTTP, the process) and this scrape's counts."""
    registry = CollectorRegistry()
    registry.register(_PresentCollector(present))
    return bytes(generate_latest(REGISTRY)) + bytes(generate_latest(registry))


class MetricsAccess:
    """Who may read ``/metrics``: a client address in TRAINHUB_METRICS_ALLOW, the bearer token of
    TRAINHUB_METRICS_TOKEN (only its SHA-256 is kept) or an admin's token (checked by the caller)."""

    def __init__(self, settings: Settings) -> None:
        self.networks = metrics_allow_networks(settings.metrics_allow or "")
        token = settings.metrics_token
        self.token_hash = sha256(token.encode()).digest() if token else None

    def allows_address(self, host: str | None) -> bool:
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def is_metrics_token(self, token: str) -> bool:
        if self.token_hash is None:
            return False
        return hmac.compare_digest(sha256(token.encode()).digest(), self.token_hash)
