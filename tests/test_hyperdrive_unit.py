"""HyperDrive's pure logic: the sweep spec's checks (Azure ML's rules, each a SpecError naming its
field), the seeded samplers, and the early termination policies on prepared curves with the
expectations computed by hand. No server, no runs."""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trainhub.hyperdrive
from trainhub.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from trainhub.hyperdrive.policies import Stop, evaluate, is_evaluation_point
from trainhub.hyperdrive.samplers import Trial, quantize, sample
from trainhub.hyperdrive.spec import (
    PolicySpec,
    SweepSpec,
    child_estimator,
    grid_size,
    parse_sweep,
)
from trainhub.sdk import Estimator, ScriptRunConfig
from trainhub.spec import SpecError

REPO = Path(__file__).resolve().parents[1]


def config(
    source: Path,
    sampling: Any,
    policy: Any = None,
    goal: PrimaryMetricGoal | str = PrimaryMetricGoal.MAXIMIZE,
    **limits: Any,
) -> HyperDriveConfig:
    run = ScriptRunConfig(
        source_directory=str(source), script="train.py", arguments=["--epochs", 3]
    )
    return HyperDriveConfig(
        run_config=run,
        hyperparameter_sampling=sampling,
        policy=policy,
        primary_metric_name="accuracy",
        primary_metric_goal=goal,
        max_total_runs=limits.pop("max_total_runs", 20),
        **limits,
    )


def parsed(source: Path, sampling: Any, policy: Any = None, **kwargs: Any) -> SweepSpec:
    return parse_sweep(json.dumps(config(source, sampling, policy, **kwargs).to_spec()))


# --- the spec's checks --------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a valid random sweep's spec: ``value`` at the dotted ``path`` (None deletes)."""

    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            del node[last]
        else:
            node[last] = value

    return change


SPACE = "hyperparameter_sampling/parameter_space"
INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "grid takes only choice",
        _set("hyperparameter_sampling/type", "grid"),
        "hyperparameter_sampling.parameter_space.--lr",
    ),
    (
        "bayesian takes no loguniform",
        _set("hyperparameter_sampling/type", "bayesian"),
        "hyperparameter_sampling.parameter_space.--lr",
    ),
    (
        "bayesian takes no normal",
        lambda s: s.update(
            hyperparameter_sampling={"type": "bayesian", "parameter_space": {"x": normal(0, 1)}}
        ),
        "hyperparameter_sampling.parameter_space.x",
    ),
    (
        "bayesian takes no policy",
        lambda s: s.update(
            hyperparameter_sampling={"type": "bayesian", "parameter_space": {"x": uniform(0, 1)}},
            policy=BanditPolicy(slack_factor=0.1).to_spec(),
        ),
        "policy",
    ),
    (
        "choice of mixed types",
        _set(f"{SPACE}/act", choice("relu", 1)),
        "hyperparameter_sampling.parameter_space.act",
    ),
    (
        "choice of booleans and numbers",
        _set(f"{SPACE}/act", choice(True, 1)),
        "hyperparameter_sampling.parameter_space.act",
    ),
    ("empty choice", _set(f"{SPACE}/act", choice()), "hyperparameter_sampling.parameter_space.act"),
    (
        "choice of lists",
        _set(f"{SPACE}/act", ["choice", [[[1], [2]]]]),
        "hyperparameter_sampling.parameter_space.act",
    ),
    (
        "uniform upside down",
        _set(f"{SPACE}/x", uniform(5, 1)),
        "hyperparameter_sampling.parameter_space.x",
    ),
    (
        "loguniform past a float",
        _set(f"{SPACE}/x", loguniform(-5, 800)),
        "hyperparameter_sampling.parameter_space.x",
    ),
    (
        "normal without spread",
        _set(f"{SPACE}/x", normal(0, 0)),
        "hyperparameter_sampling.parameter_space.x.sigma",
    ),
    (
        "quniform with q 0",
        _set(f"{SPACE}/x", quniform(0, 10, 0)),
        "hyperparameter_sampling.parameter_space.x.q",
    ),
    (
        "randint of 0",
        _set(f"{SPACE}/x", randint(0)),
        "hyperparameter_sampling.parameter_space.x.upper",
    ),
    (
        "a string bound",
        _set(f"{SPACE}/x", uniform("0", 1)),
        "hyperparameter_sampling.parameter_space.x.min_value",
    ),
    (
        "unknown expression",
        _set(f"{SPACE}/x", ["beta", [1, 2]]),
        "hyperparameter_sampling.parameter_space.x",
    ),
    (
        "wrong arity",
        _set(f"{SPACE}/x", ["uniform", [1]]),
        "hyperparameter_sampling.parameter_space.x",
    ),
    ("a bare value", _set(f"{SPACE}/x", 0.1), "hyperparameter_sampling.parameter_space.x"),
    (
        "lr and --lr are one argument",
        _set(f"{SPACE}/lr", uniform(0, 1)),
        "hyperparameter_sampling.parameter_space.lr",
    ),
    (
        "an empty name",
        _set(f"{SPACE}/--", uniform(0, 1)),
        "hyperparameter_sampling.parameter_space.--",
    ),
    ("an empty space", _set(SPACE, {}), "hyperparameter_sampling.parameter_space"),
    (
        "unknown sampling",
        _set("hyperparameter_sampling/type", "sobol"),
        "hyperparameter_sampling.type",
    ),
    (
        "negative seed",
        _set("hyperparameter_sampling/properties", {"seed": -1}),
        "hyperparameter_sampling.properties.seed",
    ),
    (
        "unknown property",
        _set("hyperparameter_sampling/properties", {"rule": "sobol"}),
        "hyperparameter_sampling.properties.rule",
    ),
    ("max_total_runs 0", _set("max_total_runs", 0), "max_total_runs"),
    ("max_total_runs 1001", _set("max_total_runs", 1001), "max_total_runs"),
    ("max_total_runs true", _set("max_total_runs", True), "max_total_runs"),
    ("max_total_runs text", _set("max_total_runs", "5"), "max_total_runs"),
    ("max_total_runs missing", _set("max_total_runs", None), "max_total_runs"),
    ("max_concurrent_runs 0", _set("max_concurrent_runs", 0), "max_concurrent_runs"),
    ("max_concurrent_runs 101", _set("max_concurrent_runs", 101), "max_concurrent_runs"),
    ("max_duration_minutes 0", _set("max_duration_minutes", 0), "max_duration_minutes"),
    (
        "bandit with both slacks",
        _set("policy", {"type": "bandit", "slack_factor": 0.1, "slack_amount": 0.2}),
        "policy.slack_factor",
    ),
    ("bandit with no slack", _set("policy", {"type": "bandit"}), "policy.slack_factor"),
    (
        "bandit slack_factor below 0",
        _set("policy", {"type": "bandit", "slack_factor": -0.1}),
        "policy.slack_factor",
    ),
    (
        "bandit slack_amount 0",
        _set("policy", {"type": "bandit", "slack_amount": 0}),
        "policy.slack_amount",
    ),
    (
        "bandit with a percentage",
        _set("policy", {"type": "bandit", "slack_factor": 0.1, "truncation_percentage": 5}),
        "policy.truncation_percentage",
    ),
    (
        "evaluation_interval 0",
        _set("policy", MedianStoppingPolicy(evaluation_interval=0).to_spec()),
        "policy.evaluation_interval",
    ),
    (
        "delay_evaluation -1",
        _set("policy", MedianStoppingPolicy(delay_evaluation=-1).to_spec()),
        "policy.delay_evaluation",
    ),
    (
        "truncation 0%",
        _set("policy", TruncationSelectionPolicy(0).to_spec()),
        "policy.truncation_percentage",
    ),
    (
        "truncation 100%",
        _set("policy", TruncationSelectionPolicy(100).to_spec()),
        "policy.truncation_percentage",
    ),
    (
        "truncation without a percentage",
        _set("policy", {"type": "truncation_selection"}),
        "policy.truncation_percentage",
    ),
    (
        "exclude_finished_jobs 1",
        _set(
            "policy",
            {
                "type": "truncation_selection",
                "truncation_percentage": 10,
                "exclude_finished_jobs": 1,
            },
        ),
        "policy.exclude_finished_jobs",
    ),
    ("unknown policy", _set("policy", {"type": "hyperband"}), "policy.type"),
    (
        "no_termination with an interval",
        _set("policy", {"type": "no_termination", "evaluation_interval": 2}),
        "policy.evaluation_interval",
    ),
    ("unknown goal", _set("primary_metric_goal", "best"), "primary_metric_goal"),
    ("empty metric name", _set("primary_metric_name", " "), "primary_metric_name"),
    ("unknown field", _set("max_runs", 5), "max_runs"),
    ("resume_from numbers", _set("resume_from", [1]), "resume_from"),
    (
        "a script outside the source",
        _set("run_config/entry_script", "../train.py"),
        "run_config.entry_script",
    ),
    ("an unknown run_config field", _set("run_config/gpus", 2), "run_config.gpus"),
]


def valid_spec(source: Path) -> dict[str, Any]:
    sampling = RandomParameterSampling(
        {"--lr": loguniform(-6, -1), "act": choice("relu", "tanh")}, properties={"seed": 5}
    )
    spec = config(source, sampling, BanditPolicy(slack_factor=0.1), max_concurrent_runs=4).to_spec()
    return json.loads(json.dumps(spec))


@pytest.mark.parametrize(("case", "change", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_every_invalid_config_is_a_spec_error_naming_the_field(
    tmp_path: Path, case: str, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    spec = valid_spec(tmp_path)
    parse_sweep(json.dumps(spec))  # the base is valid
    changed = copy.deepcopy(spec)
    change(changed)
    with pytest.raises(SpecError) as raised:
        parse_sweep(json.dumps(changed))
    assert raised.value.field == field, (case, raised.value.message)
    assert raised.value.message


def test_a_sweep_that_is_not_json_or_not_an_object_names_the_sweep() -> None:
    for raw in ("{", "[1, 2]"):
        with pytest.raises(SpecError) as raised:
            parse_sweep(raw)
        assert raised.value.field == "sweep"


def test_a_valid_sweep_reads_back_as_it_was_written(tmp_path: Path) -> None:
    spec = parse_sweep(json.dumps(valid_spec(tmp_path)))
    assert spec.hyperparameter_sampling.seed == 5
    assert spec.maximize and spec.concurrency == 4
    assert spec.policy == PolicySpec("bandit", slack_factor=0.1)
    assert parse_sweep(json.dumps(spec.to_builtins())) == spec
    registry = {"address": "r.example", "username": "u", "password": "hunter2"}
    private = copy.deepcopy(valid_spec(tmp_path))
    private["run_config"].update(
        custom_docker_image="r.example/x:1", image_registry_details=registry
    )
    assert "hunter2" in json.dumps(parse_sweep(json.dumps(private)).to_builtins())
    assert "hunter2" not in json.dumps(parse_sweep(json.dumps(private)).to_public())
    # Azure ML's goal names in any case; NoTerminationPolicy is no policy, also for Bayesian.
    bayes = parsed(
        tmp_path,
        BayesianParameterSampling({"x": uniform(0, 1)}),
        NoTerminationPolicy(),
        goal="minimize",
        max_total_runs=300,
    )
    assert not bayes.maximize and bayes.concurrency == 100
    assert isinstance(bayes.hyperparameter_sampling.seed, int)  # drawn at submit, then stored


def test_the_sdk_refuses_what_trainhub_lacks_and_needs_one_run_config(tmp_path: Path) -> None:
    sampling = GridParameterSampling({"a": choice(1, 2)})
    run = ScriptRunConfig(source_directory=str(tmp_path), script="train.py")
    common: dict[str, Any] = {
        "hyperparameter_sampling": sampling,
        "primary_metric_name": "m",
        "primary_metric_goal": PrimaryMetricGoal.MINIMIZE,
        "max_total_runs": 2,
    }
    with pytest.raises(ValueError, match="one of run_config or estimator"):
        HyperDriveConfig(**common)
    with pytest.raises(ValueError, match=r"pipeline=\.\.\.\) is not supported"):
        HyperDriveConfig(**common, run_config=run, pipeline=object())
    estimator = Estimator(source_directory=str(tmp_path), entry_script="train.py")
    spec = HyperDriveConfig(**common, estimator=estimator, resume_from=["HD_1", "HD_2"]).to_spec()
    assert spec["resume_from"] == ["HD_1", "HD_2"] and spec["primary_metric_goal"] == "MINIMIZE"
    assert parse_sweep(json.dumps(spec)).run_config.entry_script == "train.py"


# --- the samplers -------------------------------------------------------------------------------


def test_q_expressions_round_to_multiples_of_q_and_loguniform_spans_exp_of_its_bounds(
    tmp_path: Path,
) -> None:
    # Hand computation of round(x / q) * q: 37.9 / 16 = 2.37 -> 2 -> 32; 0.26 / 0.1 = 2.6 -> 3 ->
    # 0.3 (not 0.30000000000000004); -0.26 -> -0.3; an int q gives an int.
    assert quantize(37.9, 16) == 32 and isinstance(quantize(37.9, 16), int)
    assert quantize(0.26, 0.1) == 0.3 and quantize(-0.26, 0.1) == -0.3
    space = {
        "batch": quniform(16, 128, 16),
        "lr": loguniform(-6, -1),
        "units": qloguniform(0, math.log(1000), 10),
        "mom": qnormal(10, 3, 0.5),
        "decay": lognormal(0, 1),
        "scale": qlognormal(0, 1, 1),
        "layers": randint(4),
        "act": choice("relu", "tanh", "gelu"),
    }
    spec = parsed(tmp_path, RandomParameterSampling(space, {"seed": 11}))
    draws = [sample(spec, i) for i in range(1000)]
    assert all(d is not None for d in draws)
    batches = [d["batch"] for d in draws if d]
    assert {type(b) for b in batches} == {int} and set(batches) <= set(range(16, 129, 16))
    assert {16, 128} <= set(batches)  # the ends are reached by rounding
    lrs = [float(d["lr"]) for d in draws if d]
    assert all(math.exp(-6) <= v <= math.exp(-1) for v in lrs)
    # The logarithm is uniform on [-6, -1]: its mean is near -3.5 (sd of the mean ~0.05).
    assert abs(statistics.fmean(math.log(v) for v in lrs) + 3.5) < 0.2
    assert all(v % 10 == 0 and 0 <= v <= 1000 for v in (d["units"] for d in draws if d))
    assert all(float(d["mom"]) * 2 == round(float(d["mom"]) * 2) for d in draws if d)
    assert all(float(d["decay"]) > 0 for d in draws if d)
    assert all(isinstance(d["scale"], int) and d["scale"] >= 0 for d in draws if d)
    assert {d["layers"] for d in draws if d} == {0, 1, 2, 3}
    assert {d["act"] for d in draws if d} == {"relu", "tanh", "gelu"}


def _random_values(seed: int, indices: range) -> list[dict[str, Any] | None]:
    space = {"--lr": loguniform(-6, -1), "batch": quniform(16, 128, 16), "act": choice("a", "b")}
    spec = parse_sweep(
        json.dumps(config(Path("/tmp"), RandomParameterSampling(space, {"seed": seed})).to_spec())
    )
    return [sample(spec, i) for i in indices]


def test_random_sampling_with_a_seed_replays_in_another_process(tmp_path: Path) -> None:
    first = _random_values(42, range(20))
    assert first == _random_values(42, range(20))
    assert first != _random_values(43, range(20))
    assert len({json.dumps(v, sort_keys=True) for v in first}) == 20
    # Child 7 alone (a controller resuming after a restart) is the same child 7.
    assert _random_values(42, range(7, 8)) == first[7:8]
    # A fresh interpreter with another string hash seed draws the same values.
    code = (
        "import json, tests.test_hyperdrive_unit as t; "
        "print(json.dumps(t._random_values(42, range(20))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == first


def test_grid_walks_the_product_in_order_then_is_exhausted(tmp_path: Path) -> None:
    spec = parsed(
        tmp_path,
        GridParameterSampling({"--lr": choice(0.1, 0.01), "batch": choice(16, 32, 64)}),
        max_total_runs=10,
    )
    assert grid_size(spec.hyperparameter_sampling) == 6
    assert spec.hyperparameter_sampling.properties == {}  # a grid needs no seed
    # The keys in the order given, the last varying fastest.
    assert [sample(spec, i) for i in range(7)] == [
        {"--lr": 0.1, "batch": 16},
        {"--lr": 0.1, "batch": 32},
        {"--lr": 0.1, "batch": 64},
        {"--lr": 0.01, "batch": 16},
        {"--lr": 0.01, "batch": 32},
        {"--lr": 0.01, "batch": 64},
        None,
    ]
    assert sample(spec, 500) is None


def test_sampled_values_become_arguments_merged_into_script_params(tmp_path: Path) -> None:
    run = Estimator(
        source_directory=str(tmp_path),
        entry_script="train.py",
        script_params={"--data": "/data", "--lr": 0.5},
    )
    spec = parse_sweep(
        json.dumps(
            HyperDriveConfig(
                GridParameterSampling({"--lr": choice(0.1), "batch": choice(32)}),
                "accuracy",
                PrimaryMetricGoal.MAXIMIZE,
                1,
                estimator=run,
            ).to_spec()
        )
    )
    point = sample(spec, 0)
    assert point is not None
    assert child_estimator(spec, point).command_arguments() == [
        "--data",
        "/data",
        "--lr",
        "0.1",
        "--batch",
        "32",
    ]
    # A ScriptRunConfig's arguments: the same word there is dropped with its value.
    src = parsed(tmp_path, GridParameterSampling({"--epochs": choice(7)}))
    assert child_estimator(src, {"--epochs": 7}).command_arguments() == ["--epochs", "7"]


def test_bayesian_gets_closer_to_a_quadratic_s_optimum_than_random_with_the_same_budget(
    tmp_path: Path,
) -> None:
    """A simulated objective, (x - 1.7)^2 to minimize on [-10, 10], 30 children one after the
    other, each told to the sampler before the next is drawn; eight seeds, as one seed's luck can
    go either way (optuna's TPE starts with 10 random trials)."""
    budget, optimum = 30, 1.7
    gaps: dict[str, list[float]] = {"bayesian": [], "random": []}
    for seed in range(1, 9):
        for kind, sampling in (
            ("bayesian", BayesianParameterSampling({"x": uniform(-10, 10)}, {"seed": seed})),
            ("random", RandomParameterSampling({"x": uniform(-10, 10)}, {"seed": seed})),
        ):
            spec = parsed(tmp_path, sampling, goal="minimize", max_total_runs=budget)
            history: list[Trial] = []
            for index in range(budget):
                point = sample(spec, index, history)
                assert point is not None
                history.append(Trial(index, point, (float(point["x"]) - optimum) ** 2))
            gaps[kind].append(min(abs(float(t.hyperparameters["x"]) - optimum) for t in history))
    assert sum(gaps["bayesian"]) < sum(gaps["random"]), gaps
    assert statistics.median(gaps["bayesian"]) < statistics.median(gaps["random"]), gaps


def test_bayesian_sampling_replays_from_the_same_history(tmp_path: Path) -> None:
    space = {"x": uniform(0, 1), "n": quniform(0, 10, 2), "act": choice("a", "b")}
    spec = parsed(tmp_path, BayesianParameterSampling(space, {"seed": 9}), goal="minimize")
    history = [
        Trial(i, p, float(p["x"]) + float(p["n"]))
        for i in range(12)
        if (p := sample(spec, i, [])) is not None
    ]
    again = sample(spec, 12, list(reversed(history)))  # the order children finished in
    assert again == sample(spec, 12, history)
    assert again is not None and again["n"] in (0, 2, 4, 6, 8, 10) and again["act"] in ("a", "b")
    # A child that logged nothing, or ran with values outside the space, is left out.
    assert sample(spec, 12, [*history, Trial(99, {"x": 5.0, "n": 0, "act": "a"}, 1.0)]) == again
    assert sample(spec, 12, [*history, Trial(98, {"x": 0.5, "n": 2, "act": "a"}, None)]) == again


# --- the policies -------------------------------------------------------------------------------


def stopped(stops: list[Stop]) -> dict[str, int]:
    return {stop.child: stop.interval for stop in stops}


def test_evaluation_points_are_multiples_of_the_interval_from_the_delay_on() -> None:
    # Azure ML: "the policy applies every multiple of evaluation_interval that is greater than or
    # equal to delay_evaluation": interval 2, delay 5 -> 6, 8, 10...
    policy = PolicySpec("median_stopping", evaluation_interval=2, delay_evaluation=5)
    assert [n for n in range(13) if is_evaluation_point(policy, n)] == [6, 8, 10, 12]
    every = PolicySpec("median_stopping")
    assert [n for n in range(4) if is_evaluation_point(every, n)] == [1, 2, 3]
    # Azure ML's example: evaluation_interval 1, delay_evaluation 5 is "applied at every interval
    # starting at evaluation interval 5".
    delayed = PolicySpec("median_stopping", delay_evaluation=5)
    assert [n for n in range(9) if is_evaluation_point(delayed, n)] == [5, 6, 7, 8]


def test_bandit_stops_children_outside_the_slack_of_the_best() -> None:
    series = {
        "a": [0.5, 0.7, 0.8],
        "b": [0.4, 0.6, 0.72],
        "c": [0.3, 0.5, 0.6],
        "d": [0.2, 0.3],  # finished
    }
    # Maximize, slack_factor 0.1, judged at interval 3: the best is a's 0.8, the threshold
    # 0.8 / 1.1 = 0.72727; b's best 0.72 and c's 0.6 are below it, a is the best; d is finished.
    policy = PolicySpec("bandit", slack_factor=0.1)
    stops = evaluate(policy, True, series, finished={"d"})
    assert stopped(stops) == {"b": 3, "c": 3}
    b = next(s for s in stops if s.child == "b")
    assert b.numbers["best"] == 0.8 and b.numbers["best_child"] == "a"
    assert b.numbers["threshold"] == pytest.approx(0.727272, abs=1e-6)
    assert "0.72 up to interval 3 is below 0.727273 = 0.8 / (1 + 0.1)" in b.reason
    # The delay: with delay_evaluation 4 nothing is judged at interval 3; evaluation_interval 2
    # judges at 2, 4...: not at 3 either.
    assert (
        evaluate(PolicySpec("bandit", slack_factor=0.1, delay_evaluation=4), True, series, {"d"})
        == []
    )
    assert evaluate(PolicySpec("bandit", 2, slack_factor=0.1), True, series, {"d"}) == []
    # Minimize, slack_amount 0.1 at interval 2: the best loss is a's 0.5, the threshold 0.6;
    # b's best 0.7 is above it, c's 0.58 is not.
    losses = {"a": [1.0, 0.5], "b": [1.2, 0.7], "c": [0.9, 0.58]}
    assert stopped(evaluate(PolicySpec("bandit", slack_amount=0.1), False, losses, set())) == {
        "b": 2
    }
    # Negative values (a negated loss, maximized): -1.0 / 1.1 = -0.909 lies above the best, -1.0;
    # the best child runs on, b's -1.05 is stopped.
    negative = {"a": [-1.0], "b": [-1.05]}
    assert stopped(evaluate(policy, True, negative, set())) == {"b": 1}


def test_a_nan_is_the_worst_value() -> None:
    # n's values are NaN then 0.4: its best is 0.4, below 0.8 / 1.1 = 0.72727 (max() over
    # [nan, 0.4] would be nan, which compares as nothing and would keep n running).
    series = {"a": [0.5, 0.8], "n": [math.nan, 0.4]}
    assert stopped(evaluate(PolicySpec("bandit", slack_factor=0.1), True, series, set())) == {
        "n": 2
    }


def test_bandit_compares_a_young_child_with_the_others_up_to_its_interval() -> None:
    # e is at interval 2: the best up to interval 2 is a's 0.6 (a's 0.95 came at interval 3), the
    # threshold 0.6 / 1.1 = 0.5454; e's 0.58 is above it and e runs on (0.95 / 1.1 = 0.8636
    # would have stopped it).
    series = {"a": [0.5, 0.6, 0.95], "e": [0.4, 0.58]}
    assert evaluate(PolicySpec("bandit", slack_factor=0.1), True, series, set()) == []


@pytest.mark.parametrize("sign", [1, -1], ids=["maximize", "minimize"])
def test_median_stopping_stops_a_child_worse_than_the_median_of_running_averages(sign: int) -> None:
    series = {
        "a": [0.2, 0.4, 0.6],
        "b": [0.1, 0.2, 0.35],
        "c": [0.5, 0.5, 0.5],
        "d": [0.3, 0.35],  # finished
        "e": [0.0, 0.1, 0.2, 2.0, 2.0],  # finished
        "f": [0.1, 0.1, 0.1],
    }
    # At interval 3 the running averages over intervals 1..3 are a 0.4, b 0.21667, c 0.5,
    # d 0.325 (its two values), e 0.1 (its first three), f 0.1; their median is
    # (0.21667 + 0.325) / 2 = 0.27083. Bests up to 3: a 0.6, b 0.35, c 0.5 keep on; f's 0.1 is
    # below: stopped. (Averaging e over all five values, 0.86, would move the median to 0.3625
    # and stop b.) Minimizing the negated curves stops the same child.
    signed = {child: [sign * v for v in values] for child, values in series.items()}
    stops = evaluate(PolicySpec("median_stopping"), sign == 1, signed, finished={"d", "e"})
    assert stopped(stops) == {"f": 3}
    assert stops[0].numbers["median"] == pytest.approx(sign * 0.2708333, abs=1e-6)
    assert stops[0].numbers["children"] == 6
    # Delayed to interval 4, nobody running has reached a point yet.
    delayed = PolicySpec("median_stopping", delay_evaluation=4)
    assert evaluate(delayed, sign == 1, signed, finished={"d", "e"}) == []


@pytest.mark.parametrize("sign", [1, -1], ids=["maximize", "minimize"])
def test_truncation_selection_stops_the_lowest_percentage_at_each_interval(sign: int) -> None:
    series = {
        "a": [0.5, 0.9],
        "b": [0.6, 0.4],
        "c": [0.3, 0.5],
        "d": [0.2],  # finished
        "e": [0.1],
    }
    # 40%. e is at interval 1: the values at interval 1 are a 0.5, b 0.6, c 0.3, d 0.2, e 0.1;
    # floor(5 * 0.4) = 2 are truncated; e is the lowest: stopped.
    # a, b, c are at interval 2: a 0.9, b 0.4, c 0.5, and d (finished at 1) with its last 0.2;
    # floor(4 * 0.4) = 1: only d, which is finished. b runs on although its best, 0.6, is not what
    # counts (its value at interval 2 is).
    signed = {child: [sign * v for v in values] for child, values in series.items()}
    policy = PolicySpec("truncation_selection", truncation_percentage=40)
    stops = evaluate(policy, sign == 1, signed, finished={"d"})
    assert stopped(stops) == {"e": 1}
    assert stops[0].numbers == {
        "interval": 1,
        "value": sign * 0.1,
        "rank": 1,
        "children": 5,
        "truncated": 2,
        "truncation_percentage": 40,
    }
    # exclude_finished_jobs: d takes no part. Interval 2: a 0.9, b 0.4, c 0.5, floor(3 * 0.4) = 1:
    # b. Interval 1: a, b, c, e, floor(4 * 0.4) = 1: e.
    excluding = PolicySpec(
        "truncation_selection", truncation_percentage=40, exclude_finished_jobs=True
    )
    assert stopped(evaluate(excluding, sign == 1, signed, finished={"d"})) == {"b": 2, "e": 1}


def test_truncation_never_stops_more_than_its_percentage_on_a_tie() -> None:
    # Five children at interval 1, 40% -> 2 truncated; three are tied at the bottom: which two of
    # the three would be an arbitrary pick, so none is stopped.
    series = {"a": [0.1], "b": [0.1], "c": [0.1], "d": [0.9], "e": [0.8]}
    policy = PolicySpec("truncation_selection", truncation_percentage=40)
    assert evaluate(policy, True, series, set()) == []
    # 60% -> 3: all three are stopped.
    wider = PolicySpec("truncation_selection", truncation_percentage=60)
    assert stopped(evaluate(wider, True, series, set())) == {"a": 1, "b": 1, "c": 1}


def test_no_policy_stops_nothing() -> None:
    series = {"a": [1.0], "b": [0.0]}
    assert evaluate(None, True, series, set()) == []
    assert evaluate(PolicySpec("no_termination"), True, series, set()) == []


# --- Azure ML's names ---------------------------------------------------------------------------


def test_azureml_train_hyperdrive_names_are_trainhub_s(tmp_path: Path) -> None:
    from azureml.train.hyperdrive import (
        BanditPolicy as AzureBandit,
    )
    from azureml.train.hyperdrive import (
        HyperDriveConfig as AzureConfig,
    )
    from azureml.train.hyperdrive import (
        PrimaryMetricGoal as AzureGoal,
    )
    from azureml.train.hyperdrive import (
        RandomParameterSampling as AzureRandom,
    )
    from azureml.train.hyperdrive import (
        uniform as azure_uniform,
    )
    from azureml.train.hyperdrive.parameter_expressions import choice as azure_choice
    from azureml.train.hyperdrive.policy import MedianStoppingPolicy as AzureMedian
    from azureml.train.hyperdrive.run import PrimaryMetricGoal as RunGoal
    from azureml.train.hyperdrive.runconfig import HyperDriveConfig as RunConfigConfig
    from azureml.train.hyperdrive.sampling import GridParameterSampling as AzureGrid

    assert AzureConfig is RunConfigConfig is HyperDriveConfig
    assert AzureGoal is RunGoal is PrimaryMetricGoal
    assert AzureBandit is BanditPolicy and AzureMedian is MedianStoppingPolicy
    assert AzureRandom is RandomParameterSampling and AzureGrid is GridParameterSampling
    assert azure_uniform is uniform and azure_choice is choice
    import azureml.train.hyperdrive as hd

    assert set(hd.__all__) == {*trainhub.hyperdrive.__all__, "HyperDriveRun"}  # the SDK's run
    # Azure ML's example, unchanged apart from the imports.
    param_sampling = AzureRandom(
        {
            "--learning_rate": normal(10, 3),
            "--keep_probability": azure_uniform(0.05, 0.1),
            "--batch_size": azure_choice(16, 32, 64, 128),
        }
    )
    src = ScriptRunConfig(source_directory=str(tmp_path), script="train.py")
    hd_config = AzureConfig(
        run_config=src,
        hyperparameter_sampling=param_sampling,
        policy=AzureBandit(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5),
        primary_metric_name="accuracy",
        primary_metric_goal=AzureGoal.MAXIMIZE,
        max_total_runs=20,
        max_concurrent_runs=4,
    )
    spec = parse_sweep(json.dumps(hd_config.to_spec()))
    assert spec.policy == PolicySpec("bandit", 1, 5, slack_factor=0.1)
    assert set(spec.hyperparameter_sampling.parameter_space) == {
        "--learning_rate",
        "--keep_probability",
        "--batch_size",
    }
