"""Assignment-agnostic grading harness: sandboxed student worker, pytest plugin, Gradescope results.

The package is cut along its architecture (docs/architecture.md):

- ``autograder.sandbox``: the trust boundary, the only code that runs next to student code;
- ``autograder.grading``: the pytest side of grading (plugin, runner, records, scoring, results);
- ``autograder.authoring``: the assignment's config, the student template, questions;
- ``autograder.commands``: the commands people type (CLI, build, batch, run_autograder's entry);
- ``autograder.testing``: what grading suites import (comparisons, timing, the worker's helpers).

Modules lived side by side in ``autograder/`` before; their old paths (``autograder.client``,
``autograder.runner``, ...) still import, as the very same module objects, so that suites and scripts
written against them keep working (``python -m autograder.<old>`` included).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

MOVED = {
    "protocol": "sandbox.protocol", "worker": "sandbox.worker", "forkserver": "sandbox.forkserver",
    "client": "sandbox.client", "routines": "sandbox.routines", "gpu_routines": "sandbox.gpu_routines",
    "errors": "sandbox.errors", "aot": "sandbox.aot",
    "plugin": "grading.plugin", "runner": "grading.runner", "records": "grading.records",
    "scoring": "grading.scoring", "results": "grading.results", "report": "grading.report",
    "manifest": "grading.manifest", "golden": "grading.golden", "submission": "grading.submission",
    "config": "authoring.config", "template": "authoring.template", "questions": "authoring.questions",
    "cli": "commands.cli", "build": "commands.build", "batch": "commands.batch", "slurm": "commands.slurm",
    "bench_flash": "commands.bench_flash", "experiments": "commands.experiments",
    "gradescope": "commands.gradescope", "container": "commands.container",
}
# (``autograder.sandbox``, a module before, is now the boundary's package: it re-exports the
# confinement functions, which live in ``autograder.sandbox.confinement``.)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``autograder.<old>`` is the module at its new path (one object under two names)."""

    def find_spec(self, fullname: str, path=None, target=None):
        head, _, name = fullname.partition(".")
        if head == __name__ and name in MOVED:
            real = importlib.util.find_spec(f"{__name__}.{MOVED[name]}")
            if real is None:
                return None
            return importlib.util.spec_from_loader(fullname, self, origin=real.origin)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module) -> None:
        pass  # already executed under its new name

    def get_code(self, fullname: str):  # `python -m autograder.<old>` runs the moved module's code
        real = importlib.util.find_spec(f"{__name__}.{MOVED[fullname.partition('.')[2]]}")
        return real.loader.get_code(real.name)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
