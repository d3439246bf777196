"""A sweep's children best first, as ``GET /api/v1/sweeps/{id}`` gives them: shared by the CLI's
``trainhub sweep show`` and the dashboard's sweep page so that both rank alike."""

from __future__ import annotations

import math
from typing import Any


def ranked(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """The children best first by the primary metric's goal (ties by index); those without a
    value last, by index."""
    maximize = sweep["primaryMetricGoal"] == "MAXIMIZE"
    children = sweep["children"]
    scored = [
        c
        for c in children
        if isinstance(c["bestMetric"], (int, float)) and math.isfinite(c["bestMetric"])
    ]
    scored.sort(key=lambda c: (-c["bestMetric"] if maximize else c["bestMetric"], c["index"]))
    rest = sorted((c for c in children if c not in scored), key=lambda c: c["index"])
    return scored + rest


def why_stopped(child: dict[str, Any]) -> str:
    """The sentence a child the sweep stopped ended with (the policy and its numbers), else ''."""
    if not child.get("stopped"):
        return ""
    error = child.get("error") or {}
    return str(error.get("message") or child["stopped"].get("policy", "stopped"))
