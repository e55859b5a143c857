"""How student packages are imported, in every process that imports student code (the worker, the
ahead-of-time compile's child): a broken package face must cost only the parts whose own files fail."""
from __future__ import annotations

import importlib
import os
import sys
import types


def package_or_bare(package: str, root: str) -> types.ModuleType:
    """The student's package. Its ``__init__.py`` runs once; where that fails (it imports a module that
    fails, or one that was not graded), the package is made without it, so that a broken package face
    costs only the parts whose own files are broken: each part's module is then imported on its own
    and fails, if at all, with its own error. Used by every process that imports student code."""
    module = sys.modules.get(package)
    if module is not None:
        return module
    try:
        return importlib.import_module(package)
    except BaseException:  # noqa: BLE001 - a SystemExit or a refused hung import included
        import importlib.machinery
        import importlib.util

        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [os.path.join(root, package)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        for name, sub in list(sys.modules.items()):  # modules the failed __init__ did import
            head, _, tail = name.partition(".")
            if head == package and tail and "." not in tail and sub is not None:
                setattr(module, tail, sub)
        return module
