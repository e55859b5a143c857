"""Assignment-agnostic grading harness: sandboxed student worker, pytest plugin, Gradescope results."""

__version__ = "0.1.0"
