"""Worker images under a site's container runtime: the options faasctl adds, and a pre-flight image check.

Globus Compute's engine wraps the worker-pool command in the runtime's ``run`` command
(``GlobusComputeEngine.containerized_launch_cmd``)::

    docker|podman|podman-hpc run OPTIONS -v RUN_DIR:RUN_DIR -t IMAGE process_worker_pool.py ...
    apptainer|singularity run OPTIONS IMAGE process_worker_pool.py ...

Apptainer and Singularity share the host's network and run as the calling user. The docker-like runtimes
do neither by default, so faasctl adds, unless the site's ``container.options`` already choose:

``--rm``
    a block's container is removed when its worker pool exits, rather than left behind on the node;
``--network host``
    the worker pool connects back to the interchange on the host's addresses (loopback included);
``--user $(id -u):$(id -g)`` (docker, podman)
    the pool writes its logs in the mounted run folder as the user who submitted the block, not as the
    image's uid 1000. podman-hpc maps the calling user itself. Rootless podman also needs
    ``--userns keep-id`` in ``container.options``.

When the scheduler kills a block, rootful podman's container can outlive the job (its monitor, conmon,
is not the job's child): the worker pool then exits by itself once the interchange's heartbeats stop
(``heartbeat_threshold``), and ``--rm`` removes the container.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from faasctl.exceptions import DeployError

__all__ = ["DOCKER_TYPES", "APPTAINER_TYPES", "worker_container_options", "check_image"]

log = logging.getLogger(__name__)

DOCKER_TYPES = ("docker", "podman", "podman-hpc")
APPTAINER_TYPES = ("apptainer", "singularity")
#: Seconds a pre-flight check of an image in its registry may take.
CHECK_TIMEOUT = 120


def _has_option(options: str, *names: str) -> bool:
    return any(re.search(rf"(^|\s){re.escape(name)}(=|\s|$)", options) for name in names)


def worker_container_options(container_type: str, options: str = "") -> str:
    """``options`` plus what the runtime needs to run a faasctl worker pool (see the module docstring).

    Example:
        >>> worker_container_options("podman", "--env FOO=1")
        '--rm --network host --user $(id -u):$(id -g) --env FOO=1'
        >>> worker_container_options("apptainer", "--nv")
        '--nv'
    """
    if container_type not in DOCKER_TYPES:
        return options
    added = [] if _has_option(options, "--rm") else ["--rm"]
    if not _has_option(options, "--network", "--net"):
        added.append("--network host")
    if container_type != "podman-hpc" and not _has_option(options, "--user", "-u", "--userns"):
        added.append("--user $(id -u):$(id -g)")
    return " ".join([*added, options]).strip()


def check_image(container_type: str, image: str, *, timeout: float = CHECK_TIMEOUT) -> str:
    """Check, from this host, that the worker image can be had before any block is submitted.

    A block whose runtime cannot pull its image only fails on the node, after the queue wait, and parsl
    then replaces it until its failed-block budget is spent. The check makes a wrong digest, a registry
    that is down or missing credentials one clear error at once:

    - docker, podman, podman-hpc: the image is in this host's store, or its manifest is in the registry
      (``podman manifest inspect`` / ``docker manifest inspect``: no layers are pulled, the block pulls them);
    - apptainer, singularity: a ``.sif`` file exists (a ``docker://`` image is pulled by the block).

    Returns:
        What was checked, for the log (or why nothing was: the runtime is not installed on this host).

    Raises:
        DeployError: the image cannot be had; the message names the image and the runtime's reason.
    """
    if container_type in APPTAINER_TYPES:
        if image.startswith(("/", "./", "~")) or image.endswith(".sif"):
            path = Path(image).expanduser()
            if not path.is_file():
                raise DeployError(f"image {image}: no such file ({container_type} image on this host)")
            return f"{image} exists"
        return f"{image} is pulled by {container_type} in each block"
    runtime = shutil.which(container_type)
    if runtime is None:
        return f"{container_type} is not installed on this host: {image} not checked before submitting"
    tool = "podman" if container_type == "podman-hpc" and shutil.which("podman") else container_type
    if _run([tool, "image", "inspect", "--format", "{{.Id}}", image], timeout).returncode == 0:
        return f"{image} is in the {tool} store"
    proc = _run([tool, "manifest", "inspect", image], timeout)
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or f"exit status {proc.returncode}"
        raise DeployError(f"image {image} cannot be pulled with {tool}: {reason}")
    return f"{image} is in its registry"


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    log.debug("running %s", shlex.join(command))
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"no answer within {timeout:.0f} s")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"^(Error|error):\s*", "", lines[-1]) if lines else ""
