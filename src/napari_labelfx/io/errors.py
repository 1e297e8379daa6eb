"""The one error type the io layer raises for unreadable or invalid files."""
from __future__ import annotations

import os


class LabelfxIOError(ValueError):
    """A file or folder cannot be read or written; the message names the path and the problem.

    Parameters
    ----------
    path : path of the offending file or folder.
    problem : what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep the two-argument constructor picklable across processes
        return (type(self), (self.path, self.problem))


def describe_exception(exc: BaseException) -> str:
    """Short 'Type: message' text for wrapping a library exception into a LabelfxIOError."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"
