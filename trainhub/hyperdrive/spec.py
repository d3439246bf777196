"""The sweep spec: ``HyperDriveConfig``'s wire format, checked on the server with Azure ML's rules.

:func:`parse_sweep` decodes JSON (what ``HyperDriveConfig.to_spec`` sends) into a
:class:`SweepSpec`; every problem is a :class:`~trainhub.spec.SpecError` naming its field as a
dotted path (``hyperparameter_sampling.parameter_space.--lr``, ``policy.slack_factor``,
``run_config.entry_script``), which the API answers as a 422. The rules are Azure ML v1's:
grid sampling takes only ``choice``; Bayesian sampling only ``choice``, ``uniform`` and
``quniform``, and no early termination policy; ``choice`` values are of one type;
``max_total_runs`` is 1-1000 and ``max_concurrent_runs`` 1-100; a Bandit policy has exactly one of
``slack_factor`` and ``slack_amount``; ``truncation_percentage`` is 1-99.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec

from trainhub.spec import EstimatorSpec, ScalarParam, SpecError, parse_estimator
from trainhub.spec_errors import has_control_character, shown

Scalar = str | int | float | bool

SAMPLINGS = ("random", "grid", "bayesian")
POLICIES = ("bandit", "median_stopping", "truncation_selection", "no_termination")
GOALS = ("MAXIMIZE", "MINIMIZE")
MAX_TOTAL_RUNS = 1000
MAX_CONCURRENT_RUNS = 100
DEFAULT_MAX_DURATION_MINUTES = 10080
MAX_NAME_CHARS = 255
SEED_LIMIT = 2**32
# loguniform's bounds are exponents: exp(710) is past a float.
MAX_EXPONENT = 700.0

# Each expression's arguments (choice: one list of options).
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "choice": ("options",),
    "randint": ("upper",),
    "uniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "loguniform": ("min_value", "max_value"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
}
ALLOWED_EXPRESSIONS = {
    "random": tuple(ARGUMENTS),
    "grid": ("choice",),
    "bayesian": ("choice", "uniform", "quniform"),
}
# The fields each policy takes besides its type.
POLICY_FIELDS: dict[str, tuple[str, ...]] = {
    "bandit": ("evaluation_interval", "delay_evaluation", "slack_factor", "slack_amount"),
    "median_stopping": ("evaluation_interval", "delay_evaluation"),
    "truncation_selection": (
        "evaluation_interval",
        "delay_evaluation",
        "truncation_percentage",
        "exclude_finished_jobs",
    ),
    "no_termination": (),
}
SWEEP_FIELDS = (
    "run_config",
    "hyperparameter_sampling",
    "primary_metric_name",
    "primary_metric_goal",
    "max_total_runs",
    "max_concurrent_runs",
    "max_duration_minutes",
    "policy",
    "resume_from",
)
REQUIRED_FIELDS = (
    "run_config",
    "hyperparameter_sampling",
    "primary_metric_name",
    "primary_metric_goal",
    "max_total_runs",
)


class Expression(msgspec.Struct, array_like=True, frozen=True):
    """Azure ML's ``[kind, [arguments]]``; ``choice``'s one argument is the list of options."""

    kind: str
    args: list[Any]

    @property
    def options(self) -> list[Scalar]:
        return list(self.args[0]) if self.kind == "choice" else []


class SamplingSpec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    type: str
    parameter_space: dict[str, Expression]
    properties: dict[str, Any] = {}

    @property
    def seed(self) -> int | None:
        seed = self.properties.get("seed")
        return seed if isinstance(seed, int) else None


class PolicySpec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    type: str
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    slack_factor: float | None = None
    slack_amount: float | None = None
    truncation_percentage: int | None = None
    exclude_finished_jobs: bool = False


class SweepSpec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    run_config: EstimatorSpec
    hyperparameter_sampling: SamplingSpec
    primary_metric_name: str
    primary_metric_goal: str
    max_total_runs: int
    max_concurrent_runs: int | None = None
    max_duration_minutes: int = DEFAULT_MAX_DURATION_MINUTES
    policy: PolicySpec | None = None
    resume_from: list[str] = []

    @property
    def maximize(self) -> bool:
        return self.primary_metric_goal == "MAXIMIZE"

    @property
    def concurrency(self) -> int:
        """At most this many children queued or running: Azure ML's None ("all at once") is
        bounded by the limit on max_concurrent_runs."""
        if self.max_concurrent_runs is not None:
            return self.max_concurrent_runs
        return min(self.max_total_runs, MAX_CONCURRENT_RUNS)

    def to_builtins(self) -> dict[str, Any]:
        """JSON-able, in the wire format :func:`parse_sweep` reads back (seed included): what the
        server stores."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data

    def to_public(self) -> dict[str, Any]:
        """As the API returns it: the run config's registry password never leaves the server."""
        return {**self.to_builtins(), "run_config": self.run_config.to_public()}


def parse_sweep(raw: bytes | str) -> SweepSpec:
    """The sweep spec from JSON. A random or Bayesian sweep without a seed is given one here, so
    that the stored spec replays the same children."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise SpecError("sweep", f"The sweep is not valid JSON: {exc}") from None
    return sweep_from_data(data)


def sweep_from_data(data: Any) -> SweepSpec:
    """:func:`parse_sweep` for decoded JSON (or YAML)."""
    if not isinstance(data, dict):
        raise SpecError("sweep", "The sweep must be a JSON object")
    for name in data:
        if name not in SWEEP_FIELDS:
            raise SpecError(str(name), f"Unknown field {shown(str(name))} in the sweep")
    for name in REQUIRED_FIELDS:
        if data.get(name) is None:
            raise SpecError(name, f"The sweep needs '{name}'")
    sampling = _sampling(data["hyperparameter_sampling"])
    policy = _policy(data.get("policy"))
    if sampling.type == "bayesian" and policy is not None and policy.type != "no_termination":
        raise SpecError(
            "policy",
            "Bayesian sampling takes no early termination policy (Azure ML's rule): "
            "give policy=None or NoTerminationPolicy()",
        )
    concurrent = data.get("max_concurrent_runs")
    return SweepSpec(
        run_config=_run_config(data["run_config"]),
        hyperparameter_sampling=sampling,
        primary_metric_name=_metric_name(data["primary_metric_name"]),
        primary_metric_goal=_goal(data["primary_metric_goal"]),
        max_total_runs=_int("max_total_runs", data["max_total_runs"], 1, MAX_TOTAL_RUNS),
        max_concurrent_runs=None
        if concurrent is None
        else _int("max_concurrent_runs", concurrent, 1, MAX_CONCURRENT_RUNS),
        max_duration_minutes=_int(
            "max_duration_minutes",
            data.get("max_duration_minutes", DEFAULT_MAX_DURATION_MINUTES),
            1,
            None,
        ),
        policy=policy,
        resume_from=_resume_from(data.get("resume_from")),
    )


def argument_name(name: str) -> str:
    """The command-line word of hyperparameter ``name``: as given when it starts with '-' (Azure
    ML's examples write ``"--learning_rate"``), else with '--' before it (``"lr"`` -> ``--lr``)."""
    return name if name.startswith("-") else f"--{name}"


def child_estimator(spec: SweepSpec, hyperparameters: Mapping[str, Scalar]) -> EstimatorSpec:
    """A child's run spec: the sweep's ``run_config`` with each sampled value merged into
    ``script_params`` under its :func:`argument_name` (a value already there is replaced; the same
    word in a ScriptRunConfig's ``arguments`` is dropped with its value, so that the sampled value
    is the only one the script sees)."""
    run = spec.run_config
    sampled = {argument_name(name): value for name, value in hyperparameters.items()}
    params: dict[str, Any] = {k: v for k, v in run.script_params.items() if k not in sampled}
    params.update(sampled)
    arguments: list[ScalarParam | Any] = []
    skip = False
    for word in run.arguments:
        if skip:
            skip = False
        elif isinstance(word, str) and word in sampled:
            skip = True
        else:
            arguments.append(word)
    return msgspec.structs.replace(run, script_params=params, arguments=arguments)


def grid_size(sampling: SamplingSpec) -> int:
    """How many children a grid has: the product of its choices' lengths."""
    return math.prod(len(expr.options) for expr in sampling.parameter_space.values())


def _run_config(data: Any) -> EstimatorSpec:
    if not isinstance(data, dict):
        raise SpecError("run_config", "run_config must be an Estimator's or ScriptRunConfig's spec")
    try:
        return parse_estimator(msgspec.json.encode(data))
    except SpecError as exc:
        field = f"run_config.{exc.field}" if exc.field else "run_config"
        raise type(exc)(field, exc.message) from None


def _sampling(data: Any) -> SamplingSpec:
    field = "hyperparameter_sampling"
    if not isinstance(data, dict):
        raise SpecError(field, f"{field} must be a RandomParameterSampling, ... spec")
    for name in data:
        if name not in SamplingSpec.__struct_fields__:
            raise SpecError(f"{field}.{name}", f"Unknown field {shown(str(name))} in {field}")
    kind = data.get("type")
    if not isinstance(kind, str) or kind.lower() not in SAMPLINGS:
        raise SpecError(f"{field}.type", f"{field}.type must be one of {', '.join(SAMPLINGS)}")
    kind = kind.lower()
    space = data.get("parameter_space")
    if not isinstance(space, dict) or not space:
        raise SpecError(
            f"{field}.parameter_space", "parameter_space must map each hyperparameter to one"
        )
    parameters: dict[str, Expression] = {}
    words: dict[str, str] = {}
    for name, raw in space.items():
        where = f"{field}.parameter_space.{name}"
        _check_parameter_name(where, name)
        word = argument_name(name)
        if word in words:
            raise SpecError(where, f"{shown(name)} and {shown(words[word])} are both {word}")
        words[word] = name
        expression = _expression(where, raw)
        if expression.kind not in ALLOWED_EXPRESSIONS[kind]:
            allowed = ", ".join(ALLOWED_EXPRESSIONS[kind])
            raise SpecError(
                where,
                f"{kind} sampling takes only {allowed} (Azure ML's rule); "
                f"{shown(name)} is {expression.kind}",
            )
        parameters[name] = expression
    return SamplingSpec(kind, parameters, _properties(field, kind, data.get("properties")))


def _properties(field: str, kind: str, data: Any) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{field}.properties", "properties must be a dictionary")
    if kind == "grid" and data:
        raise SpecError(f"{field}.properties", "grid sampling takes no properties")
    for name in data:
        if name != "seed":
            raise SpecError(
                f"{field}.properties.{name}",
                f"Unknown property {shown(str(name))}: trainhub's samplers take only 'seed'",
            )
    if kind == "grid":
        return {}
    seed = data.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    return {"seed": _int(f"{field}.properties.seed", seed, 0, SEED_LIMIT - 1)}


def _check_parameter_name(where: str, name: str) -> None:
    if not name.strip("-") or len(name) > MAX_NAME_CHARS or has_control_character(name):
        raise SpecError(
            where,
            f"hyperparameter names are 1 to {MAX_NAME_CHARS} printable characters "
            f"(got {shown(name)})",
        )


def _expression(where: str, raw: Any) -> Expression:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not isinstance(raw[0], str)
        or not isinstance(raw[1], list)
    ):
        raise SpecError(where, "a hyperparameter's value must be an expression: choice(...), ...")
    kind, args = raw
    if kind not in ARGUMENTS:
        raise SpecError(where, f"unknown expression {shown(kind)}: {', '.join(ARGUMENTS)}")
    names = ARGUMENTS[kind]
    if len(args) != len(names):
        raise SpecError(where, f"{kind} takes {len(names)} arguments ({', '.join(names)})")
    if kind == "choice":
        return Expression(kind, [_choice_options(where, args[0])])
    for name, value in zip(names, args, strict=True):
        _number(f"{where}.{name}", value)
    if kind == "randint":
        _int(f"{where}.upper", args[0], 1, None)
    elif kind.endswith("uniform"):
        low, high = args[0], args[1]
        if not low < high:
            raise SpecError(where, f"{kind} needs min_value < max_value (got {low}, {high})")
        if kind.endswith("loguniform") and high > MAX_EXPONENT:
            raise SpecError(
                where,
                f"{kind}'s bounds are exponents (values lie in [exp(min_value), "
                f"exp(max_value)]): max_value must be at most {MAX_EXPONENT:g}",
            )
    elif args[1] <= 0:
        raise SpecError(f"{where}.sigma", f"{kind} needs sigma > 0 (got {args[1]})")
    if kind.startswith("q") and args[-1] <= 0:
        raise SpecError(f"{where}.q", f"{kind} needs q > 0 (got {args[-1]})")
    return Expression(kind, list(args))


def _choice_options(where: str, options: Any) -> list[Scalar]:
    if not isinstance(options, list) or not options:
        raise SpecError(where, "choice needs at least one option")
    kinds: set[str] = set()
    for value in options:
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(where, f"choice options must be finite numbers (got {value})")
            kinds.add("number")
        elif isinstance(value, str):
            if has_control_character(value):
                raise SpecError(where, f"choice option {shown(value)} has a control character")
            kinds.add("string")
        else:
            raise SpecError(where, "choice options are numbers, strings or booleans")
    if len(kinds) > 1:
        raise SpecError(
            where,
            f"choice options must all be of one type (Azure ML's rule); got {', '.join(sorted(kinds))}",
        )
    return list(options)


def _policy(data: Any) -> PolicySpec | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise SpecError("policy", "policy must be an early termination policy's spec")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in POLICIES:
        raise SpecError("policy.type", f"policy.type must be one of {', '.join(POLICIES)}")
    for name in data:
        if name != "type" and name not in POLICY_FIELDS[kind]:
            raise SpecError(f"policy.{name}", f"the {kind} policy takes no {shown(str(name))}")
    if kind == "no_termination":
        return PolicySpec(kind)
    interval = _int("policy.evaluation_interval", data.get("evaluation_interval", 1), 1, None)
    delay = _int("policy.delay_evaluation", data.get("delay_evaluation", 0), 0, None)
    if kind == "median_stopping":
        return PolicySpec(kind, interval, delay)
    if kind == "truncation_selection":
        exclude = data.get("exclude_finished_jobs", False)
        if not isinstance(exclude, bool):
            raise SpecError(
                "policy.exclude_finished_jobs", "exclude_finished_jobs is true or false"
            )
        if data.get("truncation_percentage") is None:
            raise SpecError("policy.truncation_percentage", "truncation_percentage is needed")
        percentage = _int("policy.truncation_percentage", data["truncation_percentage"], 1, 99)
        return PolicySpec(
            kind, interval, delay, truncation_percentage=percentage, exclude_finished_jobs=exclude
        )
    factor, amount = data.get("slack_factor"), data.get("slack_amount")
    if (factor is None) == (amount is None):
        raise SpecError(
            "policy.slack_factor",
            "the bandit policy needs exactly one of slack_factor and slack_amount",
        )
    name, value = ("slack_factor", factor) if factor is not None else ("slack_amount", amount)
    if _number(f"policy.{name}", value) <= 0:
        raise SpecError(f"policy.{name}", f"{name} must be more than 0 (got {value})")
    return PolicySpec(
        kind,
        interval,
        delay,
        slack_factor=None if factor is None else float(factor),
        slack_amount=None if amount is None else float(amount),
    )


def _metric_name(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_NAME_CHARS
        or has_control_character(value)
    ):
        raise SpecError(
            "primary_metric_name",
            f"primary_metric_name is the name the script logs: 1 to {MAX_NAME_CHARS} characters",
        )
    return value


def _goal(value: Any) -> str:
    goal = value.upper() if isinstance(value, str) else None
    if goal not in GOALS:
        raise SpecError(
            "primary_metric_goal", "primary_metric_goal is PrimaryMetricGoal.MAXIMIZE or MINIMIZE"
        )
    return goal


def _resume_from(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v and len(v) <= MAX_NAME_CHARS and not has_control_character(v)
        for v in value
    ):
        raise SpecError("resume_from", "resume_from is a list of earlier sweeps' run ids")
    return list(value)


def _int(field: str, value: Any, low: int, high: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(field, f"{field} must be a whole number")
    if value < low or (high is not None and value > high):
        limits = f"{low} to {high}" if high is not None else f"at least {low}"
        raise SpecError(field, f"{field} must be {limits} (got {value})")
    return value


def _number(field: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise SpecError(field, f"{field} must be a finite number")
    return float(value)
