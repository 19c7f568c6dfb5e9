"""``faasctl image``: build, list and push the pyhf worker images."""

from __future__ import annotations

import contextlib
import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from faasctl.cli import options

app = typer.Typer(no_args_is_help=True)
console = Console()


class Flavor(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def build(
    flavor: Annotated[Flavor, typer.Option(help="cpu: pyhf with numpy/scipy; cuda: adds JAX with CUDA 12 wheels.")] = Flavor.cpu,
    base_image: Annotated[Optional[str], typer.Option(help="The BASE_IMAGE build arg \\[default: the Dockerfile's: python:3.11-slim, nvidia/cuda runtime].")] = None,
    tag: Annotated[Optional[str], typer.Option(help="repository:tag \\[default: faasctl-worker:VERSION-FLAVOR].")] = None,
    build_arg: Annotated[Optional[List[str]], typer.Option("--build-arg", help="More build args, KEY=VALUE (repeatable).")] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the tag to its registry after the build.")] = False,
    context: Annotated[Optional[Path], typer.Option(help="A faasctl checkout \\[default: the one faasctl runs from].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show the progress only, not the build log.")] = False,
) -> None:
    """Build a worker image from images/FLAVOR/Dockerfile with the Docker engine at DOCKER_HOST.

    The image holds pyhf, globus-compute-endpoint and faasctl from hash-pinned locks; `docker run IMAGE`
    runs its self test (one small fit). See docs/images.md.

    Examples:

      faasctl image build --flavor cpu

      faasctl image build --flavor cuda --tag registry.example.org/hep/faasctl-worker:0.1.0-cuda --push
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from faasctl.images import BuildLog, build_image, default_tag

    extra = {}
    for item in build_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--build-arg")
        extra[key] = value

    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[instruction]}"), console=console, transient=True,
    ) as progress:
        bar = progress.add_task(f"Building {flavor.value}", total=None, instruction="")

        def show(entry: BuildLog) -> None:
            if entry.step and entry.line.startswith("Step "):
                instruction = escape(entry.line.split(" : ", 1)[-1][:60])
                progress.update(bar, completed=entry.step - 1, total=entry.steps, instruction=instruction)
            if not quiet:
                progress.console.print(escape(entry.line), style="dim", highlight=False, soft_wrap=True)

        image = build_image(flavor.value, base_image=base_image, tag=tag, extra_args=extra, context=context,
                            push=push, on_log=show)
    # the tag asked for: the same image may carry others (a registry's name for it, say)
    name = tag or default_tag(flavor.value)
    console.print(
        f"Built [bold]{escape(name)}[/] ({image.id[:19]}, {image.size / 1e6:.0f} MB, pyhf {image.pyhf}, "
        f"base {escape(image.base)}) in {time.perf_counter() - start:.0f} s" + (" and pushed it" if push else ""),
        highlight=False,
    )
    gpus = " --gpus all" if flavor is Flavor.cuda else ""
    console.print(f"Self test: docker run --rm{gpus} {escape(name)}", highlight=False)


@app.command()
def push(
    source: Annotated[str, typer.Argument(help="An image the Docker engine has, e.g. faasctl-worker:0.1.0-cpu.")],
    dest: Annotated[str, typer.Argument(help="REGISTRY/NAME[:TAG] to push to (TAG defaults to latest).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the digest reference only, no progress.")] = False,
) -> None:
    """Push a worker image to a registry and print its digest reference, NAME@sha256:....

    Credentials come from the docker config (docker login REGISTRY). Put the printed reference in the site
    file's image: (or --set image=...): workers then run exactly this image, whatever happens to the tag.

    Example:

      faasctl image push faasctl-worker:0.1.0-cpu registry.example.org/hep/faasctl-worker:0.1.0-cpu
    """
    from faasctl.images.registry import push_image

    err = Console(stderr=True)
    start = time.perf_counter()
    spinner = err.status(f"Pushing {escape(source)} to {escape(dest)}") if not quiet else contextlib.nullcontext()
    with spinner as status:
        def show(line: str) -> None:
            if status is not None:
                status.update(f"Pushing {escape(source)}: {escape(line[:80])}")

        pinned = push_image(source, dest, on_status=show)
    if not quiet:
        err.print(f"Pushed {escape(source)} in {time.perf_counter() - start:.0f} s; use the digest reference:", highlight=False)
    typer.echo(pinned)


@app.command("list")
def list_(as_json: options.Json = False) -> None:
    """List the worker images the Docker engine at DOCKER_HOST has."""
    from faasctl.images import list_images

    images = list_images()
    if as_json:
        typer.echo(json.dumps([image.to_dict() for image in images], indent=1))
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, caption="faasctl image list --json adds ids, base images and users")
    for column in ("image", "flavor", "faasctl", "pyhf", "size", "created"):
        table.add_column(column, no_wrap=True, justify="right" if column == "size" else "left")
    for image in images:
        created = image.created[:16].replace("T", " ")
        table.add_row("\n".join(image.tags), image.flavor, image.version, image.pyhf, f"{image.size / 1e6:.0f} MB", created)
    console.print(table)
    if not images:
        console.print("No worker images yet: faasctl image build --flavor cpu", highlight=False)
