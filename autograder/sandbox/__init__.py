"""The trust boundary: the only code that runs next to student code.

``worker`` (the process that imports and runs student code; ``student_imports``: how), ``forkserver`` (workers as forks of a
clean process that imported torch), ``protocol`` (the wire format: JSON and safetensors, never
pickle), ``client`` (the grader's end: proxies, limits, hang reports), ``confinement`` (accounts,
namespaces, resource limits, the sweep of leftover processes), ``routines`` / ``gpu_routines`` / ``aot``
(grader-written code run inside the worker), ``backprop`` (backward with a given gradient, without
torch's sympy import), ``errors`` (what a failed call raises in the grader).
Nothing here imports grading, authoring or command code (tests/test_layout.py checks it).

The confinement functions are re-exported here: ``autograder.sandbox`` was that module before.
"""
from autograder.sandbox.confinement import (  # noqa: F401
    Privilege, Sandbox, SandboxError, become_subreaper, can_reach, confine, descendants, ensure_user, has_cuda,
    kill_strays, kill_tree, kill_user, lookup_user, plan, runtime_paths, stage_code,
)
