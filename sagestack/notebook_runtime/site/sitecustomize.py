"""Loaded at start-up by every Python process of a sagestack notebook instance (its dir is on PYTHONPATH).

The SageMaker SDK v2 finds the role of a notebook instance in
``/opt/ml/metadata/resource-metadata.json`` (``sagemaker.session.NOTEBOOK_METADATA_FILE``);
without it, ``get_execution_role()`` asks AWS's STS endpoint directly, which no
local setting can redirect. A process of a notebook instance cannot write
``/opt/ml``, so this points the constant at the instance's own metadata file
(``SAGESTACK_NOTEBOOK_METADATA_FILE``) right after ``sagemaker.session`` is
imported. Nothing is imported here eagerly: start-up cost stays nil.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

#: module -> (attribute to set, environment variable holding the value)
_PATCHES = {"sagemaker.session": ("NOTEBOOK_METADATA_FILE", "SAGESTACK_NOTEBOOK_METADATA_FILE")}


class _PatchingLoader(Loader):
    def __init__(self, inner: Loader, attribute: str, value: str) -> None:
        self.inner = inner
        self.attribute = attribute
        self.value = value

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        setattr(module, self.attribute, self.value)


class _PatchFinder(MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        patch = _PATCHES.get(fullname)
        value = os.environ.get(patch[1]) if patch else None
        if patch is None or not value:
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, patch[0], value)
        return spec


if not any(isinstance(finder, _PatchFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PatchFinder())
