"""The dashboard: server-rendered pages (Jinja templates in ``templates/``, htmx from ``static/``).

One module per area, each a litestar Controller. Handlers are thin: they call the same services as
the API (so the same permission rules hold) and render a template, or only its partial when htmx
asks for a piece of the page.
"""

from __future__ import annotations

from typing import Any

from trainhub.server.pages.account import AccountPages
from trainhub.server.pages.cluster import ClusterPages
from trainhub.server.pages.datasets import DatasetPages
from trainhub.server.pages.datastores import DatastorePages
from trainhub.server.pages.experiments import ExperimentPages
from trainhub.server.pages.models import ModelPages
from trainhub.server.pages.run_charts import RunChartPages
from trainhub.server.pages.run_logs import RunLogPages
from trainhub.server.pages.runs import RunPages
from trainhub.server.pages.submit import SubmitPages
from trainhub.server.pages.sweeps import SweepPages
from trainhub.server.pages.tensorboard import TensorboardApi, TensorboardPages

PAGE_CONTROLLERS: list[Any] = [
    AccountPages,
    RunPages,
    RunLogPages,
    RunChartPages,
    TensorboardPages,
    TensorboardApi,
    ClusterPages,
    ExperimentPages,
    DatastorePages,
    DatasetPages,
    ModelPages,
    SubmitPages,
    SweepPages,
]
