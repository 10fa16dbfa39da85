"""User-facing errors.

Every error a user can cause (a wrong file, a missing dataset root, a bad
parameter) is raised as a :class:`CmbStudyError` whose message names the
offending file or value and says what to do. The command line prints it on one
line and exits with status 2; a traceback means a bug in cmbstudy.
"""

from __future__ import annotations

__all__ = ["CmbStudyError", "InputError", "ConfigError", "OutputError"]


class CmbStudyError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class InputError(CmbStudyError, ValueError):
    """An input file or dataset is missing, unreadable or inconsistent."""


class ConfigError(CmbStudyError, ValueError):
    """A profile, parameter or command-line option is invalid."""


class OutputError(CmbStudyError, OSError):
    """An output location cannot be written or already holds results."""
