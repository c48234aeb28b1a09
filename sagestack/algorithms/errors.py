"""Errors raised inside an instance process and how they become a failure file.

SageMaker's algorithm containers sort failures into three kinds: the user's
fault (bad hyperparameter, channel or data), the algorithm's (a bug or an
unexpected library failure) and the platform's (a broken environment). All
of them exit non-zero with their message in ``output/failure``; only an
unexpected exception (a bug) adds its traceback there, after the message.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

#: SageMaker keeps only this many characters of ``output/failure`` as FailureReason.
FAILURE_REASON_LIMIT = 1024

#: Exit code of an instance process whose job failed (what the real containers use).
EXIT_FAILURE = 1


class BaseToolkitError(Exception):
    """A failure with a message meant for the job's FailureReason.

    ``caused_by`` keeps the underlying exception; its class name is appended to
    the message the way SageMaker's algorithm toolkit does
    (``... could not parse value (caused by ValueError)``).
    """

    def __init__(self, message: str | None = None, caused_by: BaseException | None = None) -> None:
        text = message or (str(caused_by) if caused_by else "unknown error occurred")
        if caused_by is not None:
            text += f" (caused by {type(caused_by).__name__})"
        super().__init__(text)
        self.message = text
        self.caused_by = caused_by


class UserError(BaseToolkitError):
    """The job's configuration or data is wrong; the user can fix it."""


class AlgorithmError(BaseToolkitError):
    """The algorithm failed in a way the user could not have prevented."""


class PlatformError(BaseToolkitError):
    """The instance environment (config files, tracker address...) is broken."""


class PeerError(BaseToolkitError):
    """Another instance of the same job failed, so this one stops too (the other reports why)."""


def failure_text(exc: BaseException) -> str:
    """What goes into ``output/failure`` for ``exc``.

    The message comes first so that it survives the 1024-character cut; a
    traceback follows only for unexpected exceptions, where it helps debugging.
    """
    if isinstance(exc, BaseToolkitError):
        return exc.message
    trace = "".join(traceback.format_exception(exc))
    return f"{type(exc).__name__}: {exc}\n\n{trace}"


def write_failure(opt_ml: Path, exc: BaseException) -> None:
    """Write ``opt_ml/output/failure`` atomically (the platform may read it at any time)."""
    out = opt_ml / "output"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".failure.tmp"
    tmp.write_text(failure_text(exc), encoding="utf-8")
    os.replace(tmp, out / "failure")
