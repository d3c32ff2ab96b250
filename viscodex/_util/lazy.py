"""A module imported on first attribute access. For the few modules the CLI must import just to
read a dataclass (the train options come from TrainConfig) while torch would cost seconds."""
from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> types.ModuleType:
        if self.__dict__["_lazy_target"] is None:
            self.__dict__["_lazy_target"] = importlib.import_module(self.__name__)
        return self.__dict__["_lazy_target"]

    def __getattr__(self, name: str):
        return getattr(self._load(), name)


def lazy_module(name: str) -> types.ModuleType:
    """`torch = lazy_module("torch")`: `torch.tensor(...)` imports torch the first time."""
    return LazyModule(name)
