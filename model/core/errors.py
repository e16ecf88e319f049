"""CapTalk's errors: one root, and a class for each thing the user must do about it.

Every error CapTalk raises on purpose derives from `CapTalkError`; its message is for
the user (what is wrong and what to do), never a traceback. The subclass says which kind
of problem it is, and so the exit status of the command lines and the batch
(`exit_status`, the one place that maps errors to exit codes):

    BadInput       the user's input is wrong: audio, captions, options, a file, a rig   exit 2
    MissingPart    something is not installed or not trained yet: the model, the back
                   end's Python, audio support in this Blender build                    exit 3
    Cancelled      the user stopped it (Cancel, ESC, SIGINT)                             exit 130
    BackendFailure the back end failed unexpectedly (a bug, a crashed worker)            exit 1

Modules define their own errors as subclasses (``class AudioError(BadInput)``), so a
caller catches what it can handle by module and the command lines catch `CapTalkError`.
BadInput is also a ValueError and MissingPart a RuntimeError, as Python's own errors of
those kinds are.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_PART = 3
EXIT_CANCELLED = 130  # as a shell reports a command stopped by SIGINT


class CapTalkError(Exception):
    """An error whose message is for the user; ``exit_code`` is what a command exits with."""

    exit_code = EXIT_FAILED


class BadInput(CapTalkError, ValueError):
    """The user's input cannot be used; the message says which and why."""

    exit_code = EXIT_BAD_INPUT


class MissingPart(CapTalkError, RuntimeError):
    """A part CapTalk needs is not there (installed, trained, reachable); the message says how to get it."""

    exit_code = EXIT_MISSING_PART


class Cancelled(CapTalkError):
    """The user stopped the work; nothing was written."""

    exit_code = EXIT_CANCELLED


class BackendFailure(CapTalkError, RuntimeError):
    """The back end failed in a way the user could not have caused (the message names it)."""

    exit_code = EXIT_FAILED


def exit_status(error: BaseException) -> int:
    """The exit code a command line reports for ``error`` (1 for anything that is not ours)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_CANCELLED
    return error.exit_code if isinstance(error, CapTalkError) else EXIT_FAILED
