"""The pytest host server: a fork server whose children run the grading pytest.

A process that grades many submissions (``autograder batch``) keeps one host server that has imported
torch, pytest, Triton and the plugin, started with the pytest host's environment; each grading run is
a fork of it running ``pytest.main`` (see :func:`host_server_for`). It holds no suite, no reference and
no submission: those are only loaded by ``pytest.main`` in the fork. Student code never runs there;
the run's workers are started by the fork as before, below it. The machinery (the server's loop, the
registry of running servers) is the worker fork server's, :mod:`autograder.sandbox.forkserver`.
"""
from __future__ import annotations

import atexit
import json
import os
import sys

from autograder.sandbox import forkserver
from autograder.sandbox.forkserver import ForkServer

MAX_HOST_SERVERS = 2  # host servers kept at once (one per environment), least recently used go


def host_server_for(env: dict[str, str], start_s: float = 120.0) -> ForkServer | None:
    """The running host server for pytest processes started with exactly ``env``, started on first
    use; None where it cannot be had (then the grader starts pytest the slow way)."""
    if not forkserver.enabled() or os.environ.get("AUTOGRADER_HOSTSERVER", "1") == "0":
        return None
    key = "host " + json.dumps(env, sort_keys=True)
    return forkserver._running_or_started(
        key, lambda: ForkServer(dict(env), start_s, module=__name__), keep=MAX_HOST_SERVERS)


def preload_host() -> None:
    """What every grading run would otherwise import first (never initialise CUDA here)."""
    forkserver.preload_worker()
    import pytest  # noqa: F401
    import pytest_timeout  # noqa: F401

    import autograder.grading.plugin  # noqa: F401

    try:  # the flash suites import it in the grader; TRITON_INTERPRET is part of the server's key
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        pass


def run_pytest_main(args: list[str]) -> None:
    """In a fork of a host server: run the grading session as ``python -I -m pytest ARGS`` would,
    exit handlers included (those registered by the server's imports are the ones a new pytest
    process would have registered too). Never returns."""
    import random

    import pytest

    random.seed()  # as a new process would
    sys.argv = [os.path.join(os.path.dirname(pytest.__file__), "__main__.py"), *args]  # as `-m pytest` sets it
    try:
        code = pytest.main(args)
        code = int(code) if isinstance(code, int) else 1
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    forkserver.serve(int(sys.argv[1]), preload=preload_host, run=run_pytest_main, needs_fds=False)
