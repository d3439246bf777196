"""Azure ML v1's parameter expressions (``azureml.train.hyperdrive.parameter_expressions``).

Each function returns the expression in Azure ML's own wire format, a plain list
``[name, [arguments]]`` (``uniform(0.1, 0.5)`` -> ``["uniform", [0.1, 0.5]]``;
``choice(16, 32)`` -> ``["choice", [[16, 32]]]``), so a search space is JSON as it stands. The
meanings, as Azure ML documents them (what :mod:`trainhub.hyperdrive.samplers` draws):

- ``choice(*options)``: one of the options (a single list or range is taken as the options).
- ``randint(upper)``: an integer in ``[0, upper)``.
- ``uniform(min_value, max_value)``: a float uniformly in ``[min_value, max_value]``.
- ``quniform(min_value, max_value, q)``: ``round(uniform(min_value, max_value) / q) * q``.
- ``loguniform(min_value, max_value)``: ``exp(uniform(min_value, max_value))``: the bounds are
  exponents, the value lies in ``[exp(min_value), exp(max_value)]``.
- ``qloguniform(min_value, max_value, q)``: ``round(exp(uniform(min_value, max_value)) / q) * q``.
- ``normal(mu, sigma)``, ``qnormal(mu, sigma, q)``: a normal value, rounded to a multiple of ``q``.
- ``lognormal(mu, sigma)``, ``qlognormal(mu, sigma, q)``: ``exp(normal(mu, sigma))``, rounded so.
"""

from __future__ import annotations

from typing import Any

Expression = list[Any]


def choice(*options: Any) -> Expression:
    values: list[Any] = list(options)
    if len(values) == 1 and isinstance(values[0], (list, tuple, range)):
        values = list(values[0])
    return ["choice", [values]]


def randint(upper: int) -> Expression:
    return ["randint", [upper]]


def uniform(min_value: float, max_value: float) -> Expression:
    return ["uniform", [min_value, max_value]]


def quniform(min_value: float, max_value: float, q: float) -> Expression:
    return ["quniform", [min_value, max_value, q]]


def loguniform(min_value: float, max_value: float) -> Expression:
    return ["loguniform", [min_value, max_value]]


def qloguniform(min_value: float, max_value: float, q: float) -> Expression:
    return ["qloguniform", [min_value, max_value, q]]


def normal(mu: float, sigma: float) -> Expression:
    return ["normal", [mu, sigma]]


def qnormal(mu: float, sigma: float, q: float) -> Expression:
    return ["qnormal", [mu, sigma, q]]


def lognormal(mu: float, sigma: float) -> Expression:
    return ["lognormal", [mu, sigma]]


def qlognormal(mu: float, sigma: float, q: float) -> Expression:
    return ["qlognormal", [mu, sigma, q]]
