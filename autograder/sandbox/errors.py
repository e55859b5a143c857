"""Exceptions that carry a message meant for the student.

The plugin shows ``str(e)`` of these (and of assertion failures) without the grader's
traceback, so hidden test code and inputs never leak into results.json.
"""
from __future__ import annotations


class StudentFacingError(Exception):
    """Base class: the message is written for the student."""


class StudentCodeError(StudentFacingError):
    """The student's code raised an exception (its own traceback is in the message)."""

    def __init__(self, where: str, type_name: str, message: str, traceback: str = "") -> None:
        self.type_name = type_name
        self.student_message = message
        text = f"Your code raised {type_name} in {where}: {message}"
        if traceback:
            text += "\n" + traceback.rstrip()
        super().__init__(text)


class WorkerCrashed(StudentFacingError):
    """The worker process running student code died (segfault, os._exit, killed, ...)."""


class WorkerTimeout(StudentFacingError):
    """A call into student code ran past its time limit; the worker was stopped."""


class StaleObject(StudentFacingError):
    """A handle to an object from a worker that has since been restarted."""


class BadValue(StudentFacingError):
    """The student's code returned something of the wrong kind (type, shape, dtype, device)."""
