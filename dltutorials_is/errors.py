"""What a user can get wrong, and the one place every command turns it into a message.

`UserError` is the base of the project's own error types (`DataError`, `ModelFileError`,
`ModelStateError`, `CheckpointError`, `FIMError`, `MidiError`, `loop.TrainingDiverged`, ...): a file
that is missing or damaged, a setting that cannot work, an output that cannot be written, a run that
diverged. Each keeps its historical base class too (`ValueError`, `RuntimeError`, `OSError`), so
`except ValueError` callers keep working. Its message says what is wrong and what to do.

`entry_point` wraps every script's `main(argv)`: a `UserError` becomes one line on stderr,

    error: <what is wrong> — <what to do>

and exit status 1, without a traceback; anything else (a bug) still shows its traceback, and Ctrl+C
behaves as it always did. This module imports nothing heavy, so every layer can use it.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Something the user gave or asked for cannot work; the message says what and what to do."""


class SettingError(UserError, ValueError):
    """A value (a flag, an option) that cannot work with this data or this model."""


class OutputError(UserError, OSError):
    """An output location that cannot be written (checked before any work starts)."""


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


def report(error: UserError, stream=None) -> None:
    print(f"error: {one_line(error)}", file=stream or sys.stderr, flush=True)


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a script's `main(argv=None)`: a `UserError` is reported in one line and gives status 1.

    Argparse's own errors still exit with status 2 (before this boundary sees anything).
    """

    @functools.wraps(main)
    def guarded(*args, **kwargs) -> int:
        try:
            status = main(*args, **kwargs)
        except UserError as error:
            sys.stdout.flush()
            report(error)
            return 1
        return 0 if status is None else status

    return guarded
