"""Early termination policies as pure functions: which running children to stop now, and why.

:func:`evaluate` takes each child's primary metric in the order it was logged, which children are
finished, and the sweep's policy and goal; it returns a :class:`Stop` for each running child the
policy stops now, with the numbers that stopped it. It holds no state: the controller calls it
each time a child logs the primary metric, and a child is judged at its latest interval.

Azure ML v1's semantics, as its documentation (``azureml.train.hyperdrive`` BanditPolicy,
MedianStoppingPolicy, TruncationSelectionPolicy) states them:

- Intervals: "Each time the training script logs the primary metric counts as one interval": a
  child's N-th logged value is its interval N, whatever step it was logged with.
- When: "the policy applies every multiple of evaluation_interval that is greater than or equal
  to delay_evaluation": a child at interval N is judged when N % evaluation_interval == 0 and
  N >= delay_evaluation.
- Bandit: "Any run that doesn't fall within the slack factor or slack amount of the evaluation
  metric with respect to the best performing run will be terminated"; with slack_factor 0.2 a run
  whose best value Y has Y * (1 + 0.2) below the best run's 0.8 is canceled. So, maximizing, a
  child whose best value up to N is below best / (1 + slack_factor) (or best - slack_amount) is
  stopped; minimizing, above best * (1 + slack_factor) (or best + slack_amount). "best" is the
  best value any child (itself and finished ones too) logged at intervals 1..N.
- Median stopping: "a run will be canceled at interval N if its best primary metric reported up
  to interval N is worse than the median of the running averages for intervals 1:N across all
  runs". Each child's running average is the mean of its values at intervals 1..N (all of them
  when it logged fewer); every child with a value takes part, the one judged included.
- Truncation selection: "cancels a given percentage of lowest performing runs at each evaluation
  interval"; "when evaluating a run at a interval N, its performance is only compared with the
  performance of other runs up to interval N even if they reported metrics for intervals greater
  than N". A child's performance at N is its value at interval N; a finished child that logged
  fewer values takes part with its last one (left out with exclude_finished_jobs, Azure ML v2's
  option); a running child that has not reached N yet does not take part. Of the n children taking
  part, the floor(n * truncation_percentage / 100) lowest are truncated; a child tied with others
  is stopped only when all of them fit in that number, so a tie never stops more than it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from trainhub.hyperdrive.spec import PolicySpec


@dataclass(frozen=True)
class Stop:
    """A running child to stop: the policy, the interval it was judged at, a sentence for the
    user, and the numbers behind it (for the run's details)."""

    child: str
    policy: str
    interval: int
    reason: str
    numbers: dict[str, float | int | str] = field(default_factory=dict)


def is_evaluation_point(policy: PolicySpec, interval: int) -> bool:
    """Whether the policy judges a child that has just logged its ``interval``-th value."""
    return (
        interval >= 1
        and interval % policy.evaluation_interval == 0
        and interval >= policy.delay_evaluation
    )


def evaluate(
    policy: PolicySpec | None,
    maximize: bool,
    series: Mapping[str, Sequence[float]],
    finished: Collection[str],
) -> list[Stop]:
    """The running children (those in ``series`` and not in ``finished``) that ``policy`` stops
    now, each judged at its latest interval; ``series`` holds every child's primary metric values
    in logging order, finished children's too (they are part of the comparison). A NaN (a loss
    that diverged) counts as the worst value there is."""
    if policy is None or policy.type == "no_termination":
        return []
    worst = -math.inf if maximize else math.inf
    series = {
        child: [worst if math.isnan(v) else v for v in values] for child, values in series.items()
    }
    judge = {
        "bandit": _bandit,
        "median_stopping": _median,
        "truncation_selection": _truncation,
    }[policy.type]
    stops = []
    for child, values in series.items():
        interval = len(values)
        if child in finished or not is_evaluation_point(policy, interval):
            continue
        stop = judge(policy, maximize, child, interval, series, finished)
        if stop is not None:
            stops.append(stop)
    return stops


def _best(values: Sequence[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _worse(a: float, b: float, maximize: bool) -> bool:
    """Whether ``a`` is worse than ``b``."""
    return a < b if maximize else a > b


def _bandit(
    policy: PolicySpec,
    maximize: bool,
    child: str,
    interval: int,
    series: Mapping[str, Sequence[float]],
    finished: Collection[str],
) -> Stop | None:
    bests = {c: _best(v[:interval], maximize) for c, v in series.items() if v}
    leader = max(bests, key=bests.__getitem__) if maximize else min(bests, key=bests.__getitem__)
    best, own = bests[leader], bests[child]
    sign = 1 if maximize else -1
    if policy.slack_factor is not None:
        slack: float = policy.slack_factor
        threshold = best / (1 + slack) if maximize else best * (1 + slack)
        formula = f"{_g(best)} {'/' if maximize else '*'} (1 + {_g(slack)})"
        numbers: dict[str, float | int | str] = {"slack_factor": slack}
    else:
        slack = policy.slack_amount or 0.0
        threshold = best - sign * slack
        formula = f"{_g(best)} {'-' if maximize else '+'} {_g(slack)}"
        numbers = {"slack_amount": slack}
    # Azure ML's ratio assumes positive values: with negative ones best / (1 + slack) lies above
    # the best, and the best child itself is never stopped.
    if own == best or not _worse(own, threshold, maximize):
        return None
    numbers.update(
        {
            "interval": interval,
            "value": own,
            "best": best,
            "best_child": leader,
            "threshold": threshold,
        }
    )
    side = "below" if maximize else "above"
    return Stop(
        child,
        "bandit",
        interval,
        f"best value {_g(own)} up to interval {interval} is {side} {_g(threshold)} = {formula} "
        f"(the best, {leader}'s)",
        numbers,
    )


def _median(
    policy: PolicySpec,
    maximize: bool,
    child: str,
    interval: int,
    series: Mapping[str, Sequence[float]],
    finished: Collection[str],
) -> Stop | None:
    averages = [statistics.fmean(v[:interval]) for v in series.values() if v]
    median = statistics.median(averages)
    own = _best(series[child][:interval], maximize)
    if not _worse(own, median, maximize):
        return None
    return Stop(
        child,
        "median_stopping",
        interval,
        f"best value {_g(own)} up to interval {interval} is {'below' if maximize else 'above'} "
        f"{_g(median)}, the median of {len(averages)} children's running averages",
        {"interval": interval, "value": own, "median": median, "children": len(averages)},
    )


def _truncation(
    policy: PolicySpec,
    maximize: bool,
    child: str,
    interval: int,
    series: Mapping[str, Sequence[float]],
    finished: Collection[str],
) -> Stop | None:
    performance: dict[str, float] = {}
    for other, values in series.items():
        done = other in finished
        if done and policy.exclude_finished_jobs:
            continue
        if len(values) >= interval:
            performance[other] = values[interval - 1]
        elif done and values:
            performance[other] = values[-1]
    percentage = policy.truncation_percentage or 0
    truncated = math.floor(len(performance) * percentage / 100)
    own = performance[child]
    # Its rank from the bottom (1: the lowest), ties placed below it: stopped only when it and
    # every child tied with it fit in the truncated number.
    rank = len(performance) - sum(
        1 for c, v in performance.items() if c != child and _worse(own, v, maximize)
    )
    if rank > truncated:
        return None
    return Stop(
        child,
        "truncation_selection",
        interval,
        f"value {_g(own)} at interval {interval} ranks {rank} from the bottom of "
        f"{len(performance)} children: in the lowest {percentage}% ({truncated} of them)",
        {
            "interval": interval,
            "value": own,
            "rank": rank,
            "children": len(performance),
            "truncated": truncated,
            "truncation_percentage": percentage,
        },
    )


def _g(value: float) -> str:
    return f"{value:.6g}"
