"""Image references and registries: parse a reference, push an image, and tell a digest from a moving tag.

Workers must run exactly the image that was tested, so rendered configs and direct mode name images by
digest (``registry/name@sha256:...``); `push_image` returns that reference. A tag (``name:0.1.0-cpu``) can
be moved to other content at any time by whoever can push to the repository.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from faasctl.exceptions import ImageBuildError, ImageReferenceError

if TYPE_CHECKING:
    import docker

__all__ = ["ImageRef", "parse_reference", "push_image", "is_pinned"]

log = logging.getLogger(__name__)

# The reference grammar of the OCI distribution project (github.com/distribution/reference, regexp.go).
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
#: An engine's image id (``sha256:<64 hex>``): content-addressed like a digest, but local to one engine.
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
#: Transports in front of a reference (Apptainer/Singularity ``docker://``, podman ``docker://``).
_TRANSPORT = re.compile(r"^(docker|oras)://")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``name[:tag][@digest]``."""

    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def registry(self) -> str:
        """The registry host (``docker.io`` when the name has none), as docker decides it."""
        first, sep, _ = self.name.partition("/")
        return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


def parse_reference(text: str) -> ImageRef:
    """Parse ``name[:tag][@digest]`` (a leading ``docker://`` is allowed).

    Raises:
        ImageReferenceError: not a valid reference (the message says why).

    Example:
        >>> parse_reference("127.0.0.1:5055/faasctl-worker:0.1.0-cpu")
        ImageRef(name='127.0.0.1:5055/faasctl-worker', tag='0.1.0-cpu', digest=None)
    """
    bare = _TRANSPORT.sub("", text.strip())
    match = _REFERENCE.fullmatch(bare)
    if not match:
        hint = " (repository names are lowercase)" if bare.lower() != bare and _REFERENCE.fullmatch(bare.lower()) else ""
        raise ImageReferenceError(f"{text!r} is not an image reference such as registry.example.org/name:tag or name@sha256:digest{hint}")
    return ImageRef(match["name"], match["tag"], match["digest"])


def is_pinned(image: str) -> bool:
    """Whether ``image`` names fixed content: a digest, an engine's image id, or a file (an Apptainer ``.sif``).

    Example:
        >>> is_pinned("ghcr.io/faasctl/faasctl-worker:0.1.0-cpu"), is_pinned("/scratch/faasctl-worker.sif")
        (False, True)
    """
    text = image.strip()
    if _IMAGE_ID.fullmatch(text) or text.startswith(("/", "./", "~")) or text.endswith(".sif"):
        return True
    try:
        return parse_reference(text).digest is not None
    except ImageReferenceError:
        return False


def push_image(
    source: str,
    dest: str,
    *,
    client: docker.DockerClient | None = None,
    on_status: Callable[[str], None] | None = None,
) -> str:
    """Tag the engine's image ``source`` as ``dest`` and push it; return ``NAME@sha256:...``, the pushed digest.

    Credentials come from the docker config (``~/.docker/config.json``, ``docker login``), as for ``docker push``.

    Args:
        source: an image the engine at DOCKER_HOST has (tag or id).
        dest: ``REGISTRY/NAME[:TAG]`` (default tag ``latest``).
        client: a docker client (default: `faasctl.images.docker_client`).
        on_status: called with each progress line of the push.

    Raises:
        ImageReferenceError: ``dest`` is not a reference or names a digest, or the engine has no ``source``.
        ImageBuildError: no engine, or the push failed (registry down, refused credentials).
    """
    import docker

    from faasctl.images.build import _short, docker_client

    ref = parse_reference(dest)
    if ref.digest:
        raise ImageReferenceError(f"{dest!r}: push to a tag, not a digest (the registry computes the digest)")
    client = client or docker_client()
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound as err:
        raise ImageReferenceError(
            f"the Docker engine has no image {source!r}: build it (faasctl image build) or pull it first"
        ) from err
    except docker.errors.DockerException as err:
        raise ImageBuildError(f"reading image {source!r} failed: {_short(err)}") from err
    tag = ref.tag or "latest"
    image.tag(ref.name, tag)
    target = f"{ref.name}:{tag}"
    log.info("pushing %s (%s) as %s", source, image.id, target)
    digest = None
    try:
        for chunk in client.api.push(ref.name, tag=tag, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error", "")
                raise ImageBuildError(f"pushing {source} to {target} failed: {_explain(detail, ref)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            if on_status and chunk.get("status"):
                on_status(" ".join(str(chunk[k]) for k in ("id", "status", "progress") if chunk.get(k)))
    except docker.errors.DockerException as err:
        raise ImageBuildError(f"pushing {source} to {target} failed: {_explain(_short(err), ref)}") from err
    if not digest:
        raise ImageBuildError(f"pushing {source} to {target}: the registry {ref.registry} returned no digest")
    return f"{ref.name}@{digest}"


def _explain(detail: str, ref: ImageRef) -> str:
    """The engine's error, with the likely cause first when the registry cannot be reached."""
    detail = " ".join(detail.split())
    if any(text in detail for text in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return f"the registry {ref.registry} does not answer ({detail})"
    if any(text in detail.lower() for text in ("unauthorized", "authentication required", "denied")):
        return f"the registry {ref.registry} refused the credentials: docker login {ref.registry} ({detail})"
    return detail

