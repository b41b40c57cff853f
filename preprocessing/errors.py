"""The errors bertpipe reports to its user: a message, an optional hint and the exit code, without a traceback.

The base lives in `preprocessing`, the one package that imports nothing heavy, so that `model` (whose
`__init__` imports torch) and `pipeline` can derive their errors from it as well as `preprocessing` itself.
Every other exception that reaches a command line is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys


class BertpipeError(Exception):
    """An error whose message is for the user. `exit_code` 2: the input or the command line is wrong; fix it
    and rerun. 1: a run failed while running. `hint` says what to do, where the message does not."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class MissingInputError(BertpipeError, FileNotFoundError):
    """A file or directory the command reads is not there; the message names it."""


class OutputExistsError(BertpipeError, FileExistsError):
    """The output already holds something the command would replace; the message says how to go on."""


def report(error: BertpipeError, prefix: str = "error") -> int:
    """Print `<prefix>: <message>` and the hint, if any, on its own line to stderr; return the exit code."""
    print(f"{prefix}: {error}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    return error.exit_code
