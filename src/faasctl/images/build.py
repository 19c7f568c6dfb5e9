"""Build and list the worker images with the docker SDK.

The Dockerfiles (``images/<flavor>/Dockerfile``) hold all the knowledge of what goes in an image; this module
only finds the build context (a faasctl checkout), passes build args and a tag, streams the engine's log, and
reads the labels back. Builds use the engine's legacy builder (the docker SDK's ``/build`` API) with host
networking, so ``pip`` inside the build reaches the package index wherever the host does.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from faasctl import __version__
from faasctl.exceptions import ImageBuildError, MissingExtra

if TYPE_CHECKING:
    import docker

__all__ = [
    "FLAVORS",
    "REPOSITORY",
    "BuildLog",
    "WorkerImage",
    "build_args",
    "build_image",
    "default_tag",
    "docker_client",
    "find_context",
    "list_images",
    "locked_version",
]

log = logging.getLogger(__name__)

FLAVORS = ("cpu", "cuda")
REPOSITORY = "faasctl-worker"
#: Labels the Dockerfiles set (OCI ones plus faasctl's own).
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_BASE = "org.opencontainers.image.base.name"
LABEL_FLAVOR = "dev.faasctl.flavor"
LABEL_PYHF = "dev.faasctl.pyhf.version"
#: Seconds the engine may stay silent during one build step (a long pip install) before the build fails.
BUILD_TIMEOUT = 3600

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
_RUN_FAILED = re.compile(r"^The command '.*' returned a non-zero code: (\d+)$", re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the legacy builder colours a step's stderr


@dataclass(frozen=True)
class BuildLog:
    """One line of the engine's build log; ``step``/``steps`` tell where the build is (legacy builder)."""

    line: str
    step: int | None = None
    steps: int | None = None


@dataclass(frozen=True)
class WorkerImage:
    """A worker image as the engine has it, read back from its labels."""

    id: str
    tags: list[str]
    flavor: str
    version: str
    pyhf: str
    base: str
    size: int
    created: str
    user: str

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> WorkerImage:
        """From the engine's image inspection (``docker.models.images.Image.attrs``)."""
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        return cls(
            id=attrs["Id"],
            tags=list(attrs.get("RepoTags") or []),
            flavor=labels.get(LABEL_FLAVOR, ""),
            version=labels.get(LABEL_VERSION, ""),
            pyhf=labels.get(LABEL_PYHF, ""),
            base=labels.get(LABEL_BASE, ""),
            size=int(attrs.get("Size") or 0),
            created=str(attrs.get("Created", "")),
            user=config.get("User") or "",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (``faasctl image list --json``)."""
        return asdict(self)


def default_tag(flavor: str) -> str:
    """``faasctl-worker:<faasctl version>-<flavor>``.

    Example:
        >>> default_tag("cpu") == f"faasctl-worker:{__version__}-cpu"
        True
    """
    return f"{REPOSITORY}:{__version__}-{flavor}"


def find_context(context: str | os.PathLike[str] | None = None) -> Path:
    """The build context: a faasctl checkout (``pyproject.toml``, ``src/``, ``images/``).

    Without ``context``, the checkout this module was imported from (an editable install).

    Raises:
        ImageBuildError: the folder is not a faasctl checkout.
    """
    root = Path(context) if context is not None else Path(__file__).resolve().parents[3]
    if not (root / "images" / "cpu" / "Dockerfile").is_file() or not (root / "pyproject.toml").is_file():
        where = f"{root}" if context is not None else f"{root} (where faasctl is installed from)"
        raise ImageBuildError(
            f"{where} is not a faasctl checkout with images/<flavor>/Dockerfile: "
            "build from a clone of the repository, or pass --context to one"
        )
    return root


def locked_version(lock: str | os.PathLike[str], name: str) -> str:
    """The version of ``name`` pinned in a requirements lock file (``name==X``).

    Raises:
        ImageBuildError: the lock has no such pin.
    """
    pattern = re.compile(rf"^{re.escape(name)}==([^\s;\\]+)", re.IGNORECASE | re.MULTILINE)
    match = pattern.search(Path(lock).read_text())
    if not match:
        raise ImageBuildError(f"{lock}: no '{name}==' pin (regenerate it with images/lock.sh)")
    return match.group(1)


def build_args(flavor: str, context: Path, base_image: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build args faasctl passes: versions for the labels, the base image when given, then ``extra``."""
    _check_flavor(flavor)
    args = {
        "FAASCTL_VERSION": __version__,
        "PYHF_VERSION": locked_version(context / "images" / flavor / "requirements.lock", "pyhf"),
    }
    if base_image:
        args["BASE_IMAGE"] = base_image
    args.update(extra or {})
    return args


def docker_client() -> docker.DockerClient:
    """A client for the engine at ``DOCKER_HOST`` (or the default socket), checked to answer.

    Raises:
        MissingExtra: the docker SDK is not installed.
        ImageBuildError: no engine answers.
    """
    try:
        import docker
    except ImportError as err:
        raise MissingExtra("docker", "docker") from err
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        # Generous: on copy-based storage (vfs) creating a container copies the image's whole filesystem.
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as err:
        raise ImageBuildError(
            f"no Docker engine at DOCKER_HOST={host}: start one (`systemctl start docker`, Docker Desktop, "
            f"or .ci/docker-up.sh in a checkout) or point DOCKER_HOST at one ({_short(err)})"
        ) from err
    return client


def build_image(
    flavor: str,
    *,
    base_image: str | None = None,
    tag: str | None = None,
    extra_args: Mapping[str, str] | None = None,
    context: str | os.PathLike[str] | None = None,
    push: bool = False,
    on_log: Callable[[BuildLog], None] | None = None,
    client: docker.DockerClient | None = None,
) -> WorkerImage:
    """Build the ``flavor`` worker image from ``images/<flavor>/Dockerfile``, tag it, and optionally push it.

    Args:
        flavor: ``cpu`` or ``cuda``.
        base_image: the ``BASE_IMAGE`` build arg (default: the Dockerfile's).
        tag: ``repository:tag`` (default: `default_tag`).
        extra_args: more build args, e.g. ``{"PYTHON": "python3.12"}``.
        context: a faasctl checkout (default: `find_context`).
        push: push the tag to its registry after the build.
        on_log: called with each line of the build (and push) log.
        client: a docker client (default: `docker_client`).

    Returns:
        The built image, read back from the engine.

    Raises:
        ImageBuildError: no engine, a failed step, or a failed push; the message names the step.
    """
    _check_flavor(flavor)
    root = find_context(context)
    dockerfile = f"images/{flavor}/Dockerfile"
    tag = tag or default_tag(flavor)
    args = build_args(flavor, root, base_image, extra_args)
    client = client or docker_client()
    emit = on_log or (lambda entry: None)
    import docker

    log.info("building %s from %s/%s with %s", tag, root, dockerfile, args)
    start = time.perf_counter()
    image_id = None
    recent: list[str] = []
    step = steps = None
    recent_step = ""
    try:
        stream = client.api.build(
            path=str(root), dockerfile=dockerfile, tag=tag, buildargs=args, network_mode="host",
            rm=True, forcerm=True, decode=True, timeout=BUILD_TIMEOUT,
        )
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "")
                detail = _RUN_FAILED.sub(r"exited with status \1", detail.strip())
                where = f"step {step}/{steps} ({recent_step})" if step else "the build"
                # The step's last output lines: the real cause of a failed RUN (pip's message) is there.
                tail = "".join(f"\n  {line[:200]}" for line in recent[-5:])
                raise ImageBuildError(f"{dockerfile}: {where} failed: {detail}{tail}")
            if "aux" in chunk and isinstance(chunk["aux"], dict):
                image_id = chunk["aux"].get("ID", image_id)
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in _ANSI.sub("", text).splitlines():
                if not line.strip():
                    continue
                match = _STEP.match(line)
                if match:
                    step, steps, recent_step = int(match[1]), int(match[2]), match[3][:80]
                    recent.clear()
                elif not line.startswith((" ---> ", "Removing intermediate container")):
                    recent.append(line)
                    del recent[:-8]
                emit(BuildLog(line, step, steps))
    except docker.errors.DockerException as err:
        raise ImageBuildError(f"{dockerfile}: building {tag} failed: {_short(err)}") from err
    log.info("built %s in %.0f s", tag, time.perf_counter() - start)

    try:
        image = client.images.get(image_id or tag)
    except docker.errors.DockerException as err:
        raise ImageBuildError(f"{dockerfile}: the engine has no image {tag} after the build: {_short(err)}") from err
    if push:
        from faasctl.images.registry import push_image

        log.info("pushed %s", push_image(tag, tag, client=client, on_status=lambda line: emit(BuildLog(line))))
    return WorkerImage.from_attrs(image.attrs)


def list_images(client: docker.DockerClient | None = None) -> list[WorkerImage]:
    """The tagged faasctl worker images the engine has (with the ``dev.faasctl.flavor`` label), newest first."""
    client = client or docker_client()
    images = client.images.list(filters={"label": LABEL_FLAVOR, "dangling": False})
    found = [WorkerImage.from_attrs(image.attrs) for image in images]
    return sorted(found, key=lambda image: image.created, reverse=True)


def _check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ImageBuildError(f"unknown image flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")


def _short(err: BaseException) -> str:
    """The last line of an error from the engine (docker errors nest the whole HTTP story)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__

