"""Where fits run: every executor faasctl can send patches to, behind one `open_executor`.

All of them are plain `concurrent.futures.Executor` s, so `faasctl.scan.FitClient` treats them alike:

``local`` (`faasctl.executors.local`)
    The embedded default: worker processes on this machine behind parsl's HighThroughputExecutor.
``site`` (`faasctl.executors.site`)
    Direct mode: a site's own worker blocks (Slurm/PBS jobs, pods) submitted from its login node
    by the engine of its rendered endpoint config; no Globus Compute cloud.
``gc_engine`` (`faasctl.executors.gc_engine`)
    Globus Compute's endpoint engine (``GlobusComputeEngine``) driven in process, as an endpoint
    drives it; for tests and for checking a rendered config end to end.
``globus`` (`faasctl.executors.globus`)
    Globus Compute's SDK ``Executor``: tasks through the Globus cloud to a running endpoint.

`capacity` tells how many tasks an executor runs at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from faasctl.sites import SiteRecord

__all__ = ["open_executor", "describe_target"]


def describe_target(*, endpoint: str | None = None, site: str | SiteRecord = "local", workers: int | None = None) -> str:
    """A short phrase naming where fits run, for progress bars and reports."""
    if endpoint is not None:
        return f"endpoint {endpoint}"
    if isinstance(site, str) and site == "local":
        return f"{workers or os.cpu_count() or 1} local workers"
    return f"site {site if isinstance(site, str) else site.name} (direct)"


@contextlib.contextmanager
def open_executor(
    *, endpoint: str | None = None, site: str | SiteRecord = "local", workers: int | None = None,
    wait_on_exit: bool = True,
) -> Iterator[cf.Executor]:
    """The executor of a target: a Globus Compute endpoint, this machine, or a site in direct mode.

    Args:
        endpoint: a Globus Compute endpoint UUID (needs Globus credentials and the network).
        site: ``"local"`` (the embedded engine), a site name of the registry, or a loaded
            `faasctl.sites.SiteRecord` (with ``--site-file`` / ``--set`` applied), reached in direct mode.
        workers: local worker processes (default: the number of cores); ignored for sites and endpoints.
        wait_on_exit: for the Globus executor, whether leaving the block waits for tasks still
            running (a health check does not: a hanging task is what it reports).

    Raises:
        SiteConfigError: an unknown site, a malformed endpoint id, or no Globus credentials.

    Example:
        >>> from faasctl.executors import open_executor
        >>> from faasctl.scan import FitClient
        >>> with open_executor(workers=2) as executor:  # doctest: +SKIP
        ...     results = list(FitClient(executor).scan(pallet))
    """
    if endpoint is not None:
        from faasctl.executors.globus import globus_executor

        executor = globus_executor(endpoint)
        try:
            yield executor
        finally:
            executor.shutdown(wait=wait_on_exit, cancel_futures=not wait_on_exit)
        return
    if isinstance(site, str) and site == "local":
        from faasctl.executors.local import local_executor

        made: Any = local_executor(workers)
    else:
        from faasctl.executors.site import site_executor

        if isinstance(site, str):
            from faasctl.sites import load_site

            site = load_site(site)
        made = site_executor(site)
    with made as executor:
        yield executor
