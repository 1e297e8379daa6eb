"""The ``labelfx`` command line: one module per subcommand (see :mod:`.parser`)."""
from .errors import CLIError
from .parser import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
