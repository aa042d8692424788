"""Importing onnxruntime, with the fix named when neither runtime wheel is installed.

mdeploy's core depends on neither ``onnxruntime`` nor ``onnxruntime-gpu``: the ``cpu`` and
``gpu`` extras bring exactly one of them, since both provide the same ``onnxruntime`` module.
Every module that needs the runtime imports it through :func:`import_onnxruntime`, so the
error a user sees says which extra to install instead of a bare ``No module named``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MISSING_RUNTIME = (
    "onnxruntime is not installed. Install mdeploy with one runtime extra: "
    "pip install 'mdeploy[cpu]' (onnxruntime) or pip install 'mdeploy[gpu]' "
    "(onnxruntime-gpu, CUDA 13 and cuDNN 9); never both, they provide the same module"
)


class RuntimeMissing(ModuleNotFoundError):
    """Neither the ``cpu`` nor the ``gpu`` extra is installed."""


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or :class:`RuntimeMissing` saying which extra to install."""
    try:
        return importlib.import_module("onnxruntime")
    except ModuleNotFoundError as error:
        if error.name != "onnxruntime":
            raise  # onnxruntime is there but one of its own imports is not: show that
        raise RuntimeMissing(MISSING_RUNTIME, name="onnxruntime") from None
