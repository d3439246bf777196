"""``azureml.widgets.RunDetails``, as text: Azure ML's notebook widget drew a live view of a run;
here ``RunDetails(run).show()`` prints the run's status, its page (the dashboard's live view) and the
latest value of each metric, once."""

from __future__ import annotations

from typing import Any

from azureml._names import getattr_for
from trainhub.sdk import Run

__all__ = ["RunDetails"]
__getattr__ = getattr_for(__name__)


class RunDetails:
    def __init__(self, run_instance: Run) -> None:
        self.run = run_instance

    def show(self) -> None:
        status = self.run.get_status()
        print(f"Run {self.run.id} ({self.run.experiment.name}): {status}")
        print(f"Web View: {self.run.get_portal_url()}")
        for name, value in sorted(self.run.get_metrics().items()):
            print(f"  {name}: {_latest(value)}")


def _latest(value: Any) -> Any:
    return value[-1] if isinstance(value, list) and value else value
