"""User-facing errors.

Library code raises an `SdpoError` subclass whose message names the file, field or value that is
wrong and ends with the fix. `cli.main()` turns it into one red line and exit code 2 (bad input)
or 1 (a run that could not go on); SDPO_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations


class SdpoError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1

    def __init__(self, message: str, *, lines: list[str] | None = None):
        super().__init__(message)
        # Several independent mistakes (e.g. every schema error of one file), one line each.
        self.lines = lines or [message]


class ProblemError(SdpoError):
    """A problem file is missing, malformed or fails validation (exit code 2)."""

    exit_code = 2


class ConfigError(SdpoError):
    """A flag or config-file value is invalid (exit code 2)."""

    exit_code = 2


class BackendUnavailable(SdpoError):
    """An optional backend or model package is not installed; the message says how to install it."""

    exit_code = 2


class RunError(SdpoError):
    """A run directory is unusable (missing, foreign or corrupt) or a run failed mid-way."""

    exit_code = 1


class RunDataError(SdpoError):
    """A run directory's files are damaged, edited or do not belong together (exit code 2): found
    before anything runs, with what differs and how to proceed."""

    exit_code = 2
