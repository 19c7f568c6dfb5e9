"""Direct mode: fit on a site's workers from its login node, without the Globus cloud.

The engine is the one a Globus Compute endpoint for the site would run, built by Globus
Compute's own loader from ``faasctl render``'s files (same provider, blocks, launcher,
worker_init, container, workers per node, address); it is driven by a private parsl
DataFlowKernel on this host instead of by the endpoint::

    faasctl fit ── ParslExecutor ── DFK ── HTEX interchange (here) ◄── worker pools in
                                                 │                      Slurm/PBS jobs (blocks)
                                                 └── SlurmProvider: sbatch / squeue / scancel

Scaling is parsl's ``htex_auto_scale`` strategy, evaluated every ``strategy_period`` (< 1 s):
a block that ends early (cancelled, preempted, walltime) is replaced while tasks remain,
and the tasks it was running come back as lost, which `faasctl.scan.client.FitClient` resubmits.

The run folder (default ``./runinfo/faasctl-SITE``) holds the batch scripts, the block logs
and the interchange's keys: the compute nodes must see it, so keep it on a shared file
system, as the default (the current folder) usually is on a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

from faasctl.images.containers import check_image, worker_container_options
from faasctl.images.registry import is_pinned
from faasctl.executors.parsl import INTERCHANGE_CMD, ParslExecutor, this_python_first_on_path, worker_init_exports
from faasctl.exceptions import DeployError, ImageReferenceError, ScanError

__all__ = ["site_executor", "site_config", "default_run_dir", "check_scheduler", "check_worker_image"]

log = logging.getLogger(__name__)


def _join_init(*parts: str | None) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p and p.strip()) + "\n"


@functools.lru_cache(maxsize=None)
def _polling_every(cls: type, seconds: float) -> type:
    """``cls`` with another scheduler polling interval (parsl makes it a read-only property)."""
    return type(cls.__name__, (cls,), {"status_polling_interval": property(lambda self: seconds), "__module__": cls.__module__})


#: provider class -> (scheduler, commands it submits with, a cheap query that fails when the scheduler is down)
_SCHEDULERS = {
    "SlurmProvider": ("Slurm", ("sbatch", "squeue", "scancel"), ("squeue", "--noheader", "--user", getpass.getuser())),
    "PBSProProvider": ("PBS", ("qsub", "qstat", "qdel"), ("qstat", "-B")),
}


def check_scheduler(site: Any, provider: Any, *, timeout: float = 30.0) -> None:
    """Fail once, naming the scheduler, when it cannot take blocks: its commands missing, or it does not answer.

    Without this, every block submission fails in turn, and every patch is recorded as failed
    after its retries.

    Raises:
        ScanError: a command is not on PATH, or the status query fails.
    """
    known = next((v for k, v in _SCHEDULERS.items() if any(c.__name__ == k for c in type(provider).__mro__)), None)
    if known is None:
        return
    scheduler, commands, query = known
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise ScanError(f"site {site.name!r}: {scheduler} is not available here: {', '.join(missing)} not found on PATH "
                        "(direct mode runs on the site's login node)")
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ScanError(f"site {site.name!r}: {scheduler} does not answer: {' '.join(query)} took over {timeout:g} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[0][:200]
        raise ScanError(f"site {site.name!r}: {scheduler} does not answer: {' '.join(query)}: {why}")


def default_run_dir(site: Any) -> Path:
    """``./runinfo/faasctl-<site>``: the current folder is usually on the shared file system."""
    return (Path("runinfo") / f"faasctl-{site.name}").resolve()


def site_config(
    site: Any,
    *,
    run_dir: str | Path | None = None,
    user_values: Mapping[str, Any] | None = None,
    worker_init: str | None = None,
    strategy_period: float = 0.5,
    status_period: float = 10.0,
    max_idletime: float = 60.0,
    heartbeat_period: int | None = None,
    heartbeat_threshold: int | None = None,
    failed_blocks: int = 3,
) -> Any:
    """The parsl ``Config`` of direct mode for ``site`` (`site_executor` runs it).

    Args:
        site: the site record (`faasctl.sites.load_site`).
        run_dir: parsl's run folder, visible to the compute nodes (default
            ``./runinfo/faasctl-<site>``).
        user_values: endpoint user options (as a Globus Compute user would send them,
            e.g. ``{"max_blocks": 2}``), checked against the site's schema.
        worker_init: more shell lines for the block, after the site's. Before the site's,
            blocks without a container put this Python's ``bin`` folder first on PATH.
        strategy_period: seconds between scaling decisions; short, so that a lost block
            is replaced quickly.
        status_period: seconds between block status queries to the scheduler (parsl's
            Slurm default is 60 s; a lost block is noticed at the next query).
        max_idletime: seconds an idle block is kept before it is cancelled.
        heartbeat_period: seconds between worker heartbeats (default: the site's engine).
        heartbeat_threshold: seconds without a heartbeat before a worker pool is declared
            lost and its tasks fail over (default: the site's engine).
        failed_blocks: this many failed blocks in a row fail all tasks.
    """
    from parsl.config import Config
    from parsl.jobs.error_handlers import windowed_error_handler

    from faasctl.sites.render import load_endpoint_config, render_endpoint

    # The endpoint's own engine, as Globus Compute builds it (a KubernetesProvider uses the
    # real kubeconfig here: direct mode on Kubernetes needs access to the cluster).
    run_dir = Path(run_dir).resolve() if run_dir is not None else default_run_dir(site)
    config = load_endpoint_config(render_endpoint(site), user_values, site=site, kubeconfig="environment")
    engine = config.engine
    htex = engine.executor
    provider = htex.provider
    if provider is None:  # pragma: no cover - the loader always sets one
        raise DeployError(f"site {site.name!r}: its engine has no provider")

    # The interchange runs here, with this Python (not via a command on PATH).
    htex.interchange_launch_cmd = INTERCHANGE_CMD
    if engine.container_type:
        # As the endpoint does at start-up: the worker pool runs inside the site's image,
        # on the host's network so that it reaches the interchange here.
        engine.container_cmd_options = worker_container_options(engine.container_type, engine.container_cmd_options or "")
        engine.run_dir = str(run_dir)
        htex.launch_cmd = engine.containerized_launch_cmd()
    htex.label = f"faasctl-{site.name}"
    site_init = provider.worker_init or ""
    if "OMP_NUM_THREADS" not in site_init:  # render adds them; a hand-made config may not
        site_init = _join_init(site_init, worker_init_exports())
    # Without a container the workers must run this Python installation (the interchange
    # and the worker pools must have the same parsl): put it first on PATH; the site's own
    # worker_init comes after and may still choose another environment.
    here = "" if engine.container_type else this_python_first_on_path()
    provider.worker_init = _join_init(here, site_init, worker_init)
    # parsl asks the scheduler (squeue/qstat) for block states only this often (Slurm: 60 s):
    # a cancelled block is only seen, and replaced, at the next poll.
    if status_period < provider.status_polling_interval:
        provider.__class__ = _polling_every(type(provider), status_period)
    if heartbeat_period is not None:
        htex.heartbeat_period = heartbeat_period
    if heartbeat_threshold is not None:
        htex.heartbeat_threshold = heartbeat_threshold
    # A cancelled block is normal (preemption, scancel); only a run of failed blocks
    # (bad worker_init, broken image) fails the scan instead of resubmitting forever.
    htex.block_error_handler = functools.partial(windowed_error_handler, threshold=failed_blocks)

    return Config(
        executors=[htex],
        run_dir=str(run_dir),
        retries=0,  # FitClient resubmits lost tasks itself
        strategy="htex_auto_scale",
        strategy_period=strategy_period,
        max_idletime=max_idletime,
        initialize_logging=False,
        usage_tracking=0,
    )


def check_worker_image(site: Any) -> None:
    """Refuse a worker image named by a moving tag, and check that it can be pulled, before any block starts.

    Direct mode runs the image it names on every node: a tag can point at other content by the time a
    block starts, so only a digest (``NAME@sha256:...``, printed by ``faasctl image push``), an image id or
    a ``.sif`` file is accepted. A wrong digest or a registry that is down fails here, in seconds, with the
    image's name, rather than as a series of failed blocks.
    """
    image, runtime = site.image, site.container.type
    if not is_pinned(image):
        raise ImageReferenceError(
            f"site {site.name!r}: image {image} is a moving tag; direct mode runs images by digest: "
            "set image to NAME@sha256:... (faasctl image push prints it)"
        )
    log.info("site %s: worker image %s", site.name, check_image(runtime, image))


@contextlib.contextmanager
def site_executor(site: Any, *, run_dir: str | Path | None = None, **options: Any) -> Iterator[ParslExecutor]:
    """Run fits on ``site``'s workers from this (login) node: no Globus Compute cloud.

    Args:
        site: the site record (`faasctl.sites.load_site`).
        run_dir: parsl's run folder, visible to the compute nodes (default
            ``./runinfo/faasctl-<site>``).
        options: `site_config`'s keywords (user values, worker_init, scaling and heartbeat periods).

    Yields:
        A `faasctl.executors.parsl.ParslExecutor` for `faasctl.scan.client.FitClient` / `faasctl.scan.run_scan`;
        its blocks are cancelled when the context exits.

    Raises:
        RenderError: the site's endpoint config is refused by Globus Compute's loader.
        ImageReferenceError: the site's image is a moving tag (`check_worker_image`).
        DeployError: the site's image cannot be pulled (`check_worker_image`).

    Example:
        >>> from faasctl.scan.client import FitClient
        >>> from faasctl.pallets.load import load_pallet
        >>> from faasctl.sites import load_site
        >>> with site_executor(load_site("slurm")) as ex:  # doctest: +SKIP
        ...     results = list(FitClient(ex).scan(load_pallet("examples/simple")))
    """
    # parsl logs every task at INFO; keep the terminal for the progress bar.
    logging.getLogger("parsl").setLevel(logging.WARNING)
    if site.container is not None and site.image:
        check_worker_image(site)
    run_dir = Path(run_dir).resolve() if run_dir is not None else default_run_dir(site)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = site_config(site, run_dir=run_dir, **options)
    log.info("direct mode on site %s: %s blocks from %s", site.name, type(config.executors[0].provider).__name__, run_dir)
    check_scheduler(site, config.executors[0].provider)
    executor = ParslExecutor(config)
    try:
        yield executor
    finally:
        executor.shutdown()
