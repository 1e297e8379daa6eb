"""What every subcommand shares: the user-error type, the one-line failure, ``KEY=VALUE`` options."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class CLIError(ValueError):
    """A problem with the user's input: printed as one line, exit code 2."""


def fail(command: str, message: str) -> int:
    """Print ``labelfx COMMAND: error: MESSAGE`` on stderr and return exit code 2."""
    print(f"labelfx {command}: error: {message}", file=sys.stderr)
    return 2


def parse_key_values(pairs: list[str], option: str = "--param") -> dict[str, Any]:
    """``["k=1", "name=abc"]`` -> ``{"k": 1, "name": "abc"}``: values parsed as JSON when they are JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{option} expects KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def parse_method_params(method: str, pairs: list[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` options checked against ``method``'s declared parameters.

    Values are read as JSON when they are JSON (``k=0.05``, ``tta_flips=false``), else as text
    (``threshold=otsu``, ``sigmas=1,2,4``). A wrong key or value is one ``ParamError`` line naming the
    method, the parameter and what it accepts (exit code 2). Unknown methods pass unchecked: the
    trainer reports them with the list of methods.
    """
    from ..engine.factory import check_method_params, training_methods

    params = parse_key_values(pairs)
    if method in training_methods():
        check_method_params(method, params)
    return params


def check_report_paths(*paths: str | None) -> None:
    """Report files (CSV, JSON, PNG) must be writable and must not be folders; checked before any work."""
    from ..io.errors import LabelfxIOError
    from ..io.safety import check_writable

    for path in paths:
        if path is None:
            continue
        check_writable(path)
        if Path(path).is_dir():
            raise LabelfxIOError(path, "is a folder; give a file name for the report")
