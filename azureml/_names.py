"""Azure ML's names that trainhub does not have raise an error naming them, instead of Python's bare
"cannot import name" or "no module named": the module-level ``__getattr__`` of every ``azureml``
module, and a finder for its modules that are not there."""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

README = "see trainhub's README, 'Azure ML code'"


def not_available(module: str, name: str) -> ImportError:
    return ImportError(f"{module}.{name} is not available in trainhub yet ({README})", name=module)


class MissingModules(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: an ``azureml`` module that no finder found is one of Azure ML's
    that trainhub does not have (``azureml.train.automl``...), and the error says so."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.startswith("azureml."):
            raise ModuleNotFoundError(
                f"{fullname} is not available in trainhub yet ({README})", name=fullname
            )
        return None


def getattr_for(module: str, lazy: dict[str, str] | None = None) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module``: names in ``lazy`` come from the submodule it names (imported
    on first use, so that a missing piece of trainhub breaks only the name that needs it); a
    submodule imports; any other public name raises ImportError (Python passes that one through
    ``from module import name`` with its message, where an AttributeError would lose it)."""

    def __getattr__(name: str) -> Any:
        if lazy and name in lazy:
            return getattr(importlib.import_module(lazy[name]), name)
        if name.startswith("_"):  # dunders and private probes (IPython, pickle) stay plain lookups
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if hasattr(sys.modules[module], "__path__"):  # a package: the name may be a submodule
            try:
                return importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{module}.{name}":
                    raise
        raise not_available(module, name)

    return __getattr__
