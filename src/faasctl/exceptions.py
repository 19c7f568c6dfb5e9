"""One error hierarchy for faasctl.

Each error carries the exit status the CLI returns for it (docs/exit-codes.md): 1 when
something failed at run time, 2 for bad input (a usage error). Only ``faasctl.cli.main``
turns errors into exits; library code raises.
"""

from __future__ import annotations

__all__ = [
    "FaasctlError",
    "PalletError",
    "PatchError",
    "SiteConfigError",
    "RenderError",
    "ImageBuildError",
    "ImageReferenceError",
    "DeployError",
    "ScanError",
    "ResultsError",
    "EndpointUnhealthy",
    "StackMismatch",
    "MissingExtra",
]


class FaasctlError(Exception):
    """Base class: every error faasctl raises on purpose derives from it."""

    exit_code: int = 1


class PalletError(FaasctlError):
    """Raised when a pallet (background workspace + patches) cannot be read or is invalid.

    Bad input: the CLI exits with status 2, like a usage error.
    """

    exit_code = 2


class PatchError(PalletError):
    """Raised when a patch is unknown or does not apply to the background workspace."""


class SiteConfigError(FaasctlError):
    """Raised when a site record or an override of it is invalid."""

    exit_code = 2


class RenderError(FaasctlError):
    """Raised when a rendered endpoint config is refused by Globus Compute's own loader."""

    exit_code = 2


class ImageBuildError(FaasctlError):
    """Raised when a worker image cannot be built (no engine, failed step)."""

    exit_code = 1


class ImageReferenceError(FaasctlError):
    """Raised when an image reference is malformed, names no local image, or is a moving tag where a digest is needed."""

    exit_code = 2


class DeployError(FaasctlError):
    """Raised when deploying, querying or tearing down an endpoint fails."""

    exit_code = 1


class ScanError(FaasctlError):
    """Raised when a scan cannot go on (the engine failed, no scheduler to run blocks)."""

    exit_code = 1


class ResultsError(ScanError):
    """Raised when a results folder cannot be used: not a writable folder, results of another
    pallet, an unreadable results file, or in use by another scan.

    Bad input: the CLI exits with status 2.
    """

    exit_code = 2


class EndpointUnhealthy(FaasctlError):
    """Raised when health-check fits fail, time out or disagree with the reference values."""

    exit_code = 1


class StackMismatch(ScanError):
    """Raised before fitting when the workers run another Python minor, dill, pyhf or faasctl
    than the client (`faasctl.stack.compare`): their results could not be trusted or read.

    A deployment error, not a fit failure: the CLI exits with status 2.
    """

    exit_code = 2


class MissingExtra(FaasctlError):
    """Raised when an optional dependency is missing; the message names the pip extra."""

    exit_code = 2

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'faasctl[{extra}]'")


def error_text(err: BaseException) -> str:
    """One line for an exception; Globus Compute's ``TaskExecutionFailed`` keeps the remote traceback.

    (A helper, not an error class: not in ``__all__``, which lists the errors and their exit codes.)
    """
    text = str(getattr(err, "remote_data", None) or err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    name = type(err).__name__
    if not last:
        return name
    return (last if name in last.split(":")[0] else f"{name}: {last}")[:500]
