"""Drawing a child's hyperparameters: pure, seeded and replayable.

:func:`sample` gives child ``index``'s values from the sweep's spec, the sweep's seed and (for
Bayesian sampling) the children finished so far; the same arguments give the same values in any
process, so a controller that restarts after a crash draws what it drew before:

- random: every value is drawn from its own generator seeded by (seed, index, name), so child 7's
  values depend on nothing but the seed (not on the children before it, nor on the other names);
- grid: child ``index`` is the index-th point of the product of the ``choice`` lists, the space's
  keys in the order given and the last one varying fastest; ``None`` once the grid is exhausted;
- Bayesian: optuna's TPE sampler, seeded by (seed, index), asked once on an in-memory study rebuilt
  from ``history`` (the finished children and their values).

The values follow Azure ML's definitions (see :mod:`trainhub.hyperdrive.parameter_expressions`):
``q`` variants are ``round(x / q) * q`` (an int when ``q`` is an int), ``loguniform`` is
``exp(uniform(min_value, max_value))``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainhub.hyperdrive.spec import Expression, Scalar, SweepSpec

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Trial:
    """A finished child: its index, the values it ran with, and its primary metric's best value
    (``None`` when it logged none: such a child tells the Bayesian sampler nothing)."""

    index: int
    hyperparameters: Mapping[str, Scalar]
    value: float | None


def sample(spec: SweepSpec, index: int, history: Sequence[Trial] = ()) -> dict[str, Scalar] | None:
    """Child ``index``'s hyperparameters (by name, as in the parameter space), or ``None`` when
    the sampling has no more points (an exhausted grid)."""
    if index < 0:
        raise ValueError(f"a child's index is 0 or more (got {index})")
    sampling = spec.hyperparameter_sampling
    if sampling.type == "grid":
        return grid_point(sampling.parameter_space, index)
    seed = sampling.seed
    if seed is None:
        raise ValueError("the sweep has no seed: parse it with parse_sweep, which gives it one")
    if sampling.type == "bayesian":
        return _bayesian(spec, seed, index, history)
    return {
        name: draw(expression, _generator(seed, index, name))
        for name, expression in sampling.parameter_space.items()
    }


def grid_point(space: Mapping[str, Expression], index: int) -> dict[str, Scalar] | None:
    """The index-th combination of the choices (first key slowest), without building the grid."""
    lists = [expression.options for expression in space.values()]
    if index >= math.prod(len(options) for options in lists):
        return None
    point: dict[str, Scalar] = {}
    for name, options in reversed(list(zip(space, lists, strict=True))):
        index, position = divmod(index, len(options))
        point[name] = options[position]
    return {name: point[name] for name in space}


def draw(expression: Expression, rng: random.Random) -> Scalar:
    """One value of ``expression`` with Azure ML's meaning."""
    kind, args = expression.kind, expression.args
    if kind == "choice":
        return rng.choice(expression.options)
    if kind == "randint":
        return rng.randrange(int(args[0]))
    if kind in ("uniform", "quniform"):
        value = rng.uniform(args[0], args[1])
    elif kind in ("loguniform", "qloguniform"):
        value = math.exp(rng.uniform(args[0], args[1]))
    elif kind in ("normal", "qnormal"):
        value = rng.gauss(args[0], args[1])
    else:  # lognormal, qlognormal
        value = math.exp(rng.gauss(args[0], args[1]))
    return quantize(value, args[2]) if kind.startswith("q") else value


def quantize(value: float, q: float) -> int | float:
    """Azure ML's ``round(value / q) * q``: an int when ``q`` is one (``--batch_size 64``, not
    ``64.0``), else a float without the binary noise of the product (0.3, not 0.30000000000000004)."""
    steps = round(value / q)
    if isinstance(q, int):
        return int(steps * q)
    return float(f"{steps * q:.12g}")


def _generator(seed: int, index: int, name: str) -> random.Random:
    """A generator for one value: seeded from a digest, so the same in every process (Python's
    ``hash`` of a string is not)."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _bayesian(
    spec: SweepSpec, seed: int, index: int, history: Sequence[Trial]
) -> dict[str, Scalar]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = spec.hyperparameter_sampling.parameter_space
    distributions = {name: _distribution(expr) for name, expr in space.items()}
    study = optuna.create_study(
        direction="maximize" if spec.maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=_tpe_seed(seed, index)),
    )
    # One order whatever order the children finished in (resumed sweeps' indices may repeat).
    for trial in sorted(history, key=lambda t: (t.index, repr(sorted(t.hyperparameters.items())))):
        if trial.value is None or not math.isfinite(trial.value):
            continue
        params = _to_optuna(space, trial.hyperparameters)
        if params is None:
            continue
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=trial.value)
        )
    asked = study.ask(distributions)
    return {name: _from_optuna(expr, asked.params[name]) for name, expr in space.items()}


def _tpe_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{index}\x00tpe".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _distribution(expression: Expression) -> optuna.distributions.BaseDistribution:
    """choice -> categorical; uniform -> float; quniform -> int steps k with value k * q (Azure
    ML's round(uniform / q) * q may fall just outside [min, max], optuna's steps may not)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if expression.kind == "choice":
        return CategoricalDistribution(expression.options)
    low, high = float(expression.args[0]), float(expression.args[1])
    if expression.kind == "uniform":
        return FloatDistribution(low, high)
    q = expression.args[2]
    return IntDistribution(round(low / q), round(high / q))


def _to_optuna(space: Mapping[str, Expression], values: Mapping[str, Any]) -> dict[str, Any] | None:
    """A finished child's values as optuna's parameters; ``None`` when one does not fit the
    space (a warm start from a sweep with another space)."""
    params: dict[str, Any] = {}
    for name, expression in space.items():
        if name not in values:
            return None
        value = values[name]
        if expression.kind == "choice":
            if value not in expression.options:
                return None
            params[name] = value
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if expression.kind == "uniform":
            if not expression.args[0] <= value <= expression.args[1]:
                return None
            params[name] = float(value)
        else:
            step = round(value / expression.args[2])
            low, high = (round(bound / expression.args[2]) for bound in expression.args[:2])
            if not low <= step <= high:
                return None
            params[name] = step
    return params


def _from_optuna(expression: Expression, value: Any) -> Scalar:
    if expression.kind == "quniform":
        return quantize(value * expression.args[2], expression.args[2])
    result: Scalar = value
    return result
