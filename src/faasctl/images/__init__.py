"""Worker container images: pyhf, Globus Compute and faasctl, for CPU (numpy/scipy) and CUDA (JAX).

The Dockerfiles live in ``images/<flavor>/`` of the repository (docs/images.md). This package builds and
lists them through the docker SDK (`faasctl.images.build`, imported lazily by the CLI), pushes them and
tells digests from tags (`faasctl.images.registry`), runs them under a site's container runtime
(`faasctl.images.containers`), and holds the images' self test (`faasctl.images.selftest`, the images'
default command).
"""

from __future__ import annotations

from faasctl.images.build import (
    FLAVORS,
    REPOSITORY,
    BuildLog,
    WorkerImage,
    build_args,
    build_image,
    default_tag,
    docker_client,
    find_context,
    list_images,
    locked_version,
)
from faasctl.images.registry import ImageRef, is_pinned, parse_reference, push_image

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
    "ImageRef",
    "is_pinned",
    "parse_reference",
    "push_image",
]
