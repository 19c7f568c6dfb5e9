"""``faasctl pallet``: look into pallets before fitting them."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from faasctl.cli import options

if TYPE_CHECKING:
    from rich.progress import Progress

    from faasctl.pallets.inspection import Inspection

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

EXIT_HELP = (
    "Exit status: 0 every patch builds a model; 1 some patches cannot build a model, or the "
    "patchset's digest does not match the background; 2 bad input (unreadable or unsafe file, "
    "several regions and no --region)."
)


@app.command(epilog=EXIT_HELP)
def inspect(
    pallet: options.Pallet,
    region: options.Region = None,
    labels: options.Labels = None,
    as_json: options.Json = False,
    list_patches: Annotated[bool, typer.Option("--patches", help="Also list every patch with its values.")] = False,
) -> None:
    """Show what a pallet holds and whether every patch builds a model.

    Reports the regions, the layout (patchset.json, or one patch.NAME.json per point),
    the patches and their values, the background digest check, the model (channels, bins,
    samples, parameters, modifiers), whether all patches share one structure (what batched
    and compiled fits need), and each patch pyhf cannot build a model for, with the reason.

    Examples:

      faasctl pallet inspect examples/simple

      faasctl pallet inspect SUSY-2018-04_likelihoods.tar.gz --region Region-combined --labels mstau,mlsp

      faasctl pallet inspect ../shared/pallets/1Lbb --json
    """
    from faasctl.pallets.inspection import inspect_pallet
    from faasctl.pallets.load import load_pallet

    with err_console.status(f"Reading {escape(str(pallet))} …"):
        # a digest mismatch is a finding to report here, not an error
        loaded = load_pallet(pallet, region=region, labels=labels, ignore_digest=True)
    bar = _LazyProgress(f"Checking {len(loaded)} patches")
    try:
        report = inspect_pallet(loaded, progress=bar.update)
    finally:
        bar.stop()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, list_patches)
    if not report.ok:
        raise typer.Exit(1)


class _LazyProgress:
    """A progress bar on stderr that appears only once the work has taken a second."""

    def __init__(self, description: str, after: float = 1.0) -> None:
        self.description = description
        self.start = time.monotonic()
        self.after = after
        self.progress: Progress | None = None
        self.task: Any = None

    def update(self, done: int, total: int) -> None:
        if self.progress is None:
            if time.monotonic() - self.start < self.after:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=err_console, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=total)
        self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _few(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _print_report(report: Inspection, list_patches: bool) -> None:
    from faasctl.pallets.load import LAYOUT_PATCH_FILES

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold", no_wrap=True)
    info.add_column(overflow="fold")
    region = escape(report.region or "(one region)")
    if len(report.regions) > 1:
        region += f"  of {len(report.regions)}: {escape(', '.join(report.regions))}"
    info.add_row("pallet", escape(report.source))
    info.add_row("region", region)
    if report.layout == LAYOUT_PATCH_FILES:
        info.add_row("layout", "patch files: one patch.NAME.json per point, values read from the names")
    else:
        info.add_row("layout", "patchset: BkgOnly.json + patchset.json")
    info.add_row("background", escape(report.background_file))
    info.add_row("patches", f"{report.patch_count} in {escape(report.patches_file)}")
    info.add_row(
        "values",
        "   ".join(f"{escape(label)}: {v['min']:g} … {v['max']:g} ({v['distinct']} values)" for label, v in report.values.items())
        or "(none)",
    )
    status = report.digest_status
    if status == "match":
        digest = f"[green]ok[/] sha256 {report.digest[:16]}… matches the patchset"
    elif status == "mismatch":
        digest = (f"[red]MISMATCH[/] the patchset records {report.recorded_digest[:16]}…, the background "  # type: ignore[index]
                  f"is {report.digest[:16]}… (fit only with --ignore-digest)")
    else:
        digest = f"sha256 {report.digest[:16]}… computed from the background (this layout records none)"
    info.add_row("digest", digest)
    model = report.model
    if model is not None:
        info.add_row(
            "model",
            f"{len(model.channels)} channels, {model.bins} bins, {model.samples} samples, "
            f"{model.parameters} parameters ({model.parameter_sets} named), POI {escape(str(model.poi))}  [dim](patch {escape(model.patch)})[/]",
        )
    applied = sum(len(v) for v in report.structures.values())
    if report.shared_structure and applied:
        structure = f"[green]one structure[/] shared by all {applied} patches that apply: batched/compiled fits apply"
    elif applied:
        structure = f"{len(report.structures)} different structures among {applied} patches: batched/compiled fits need one per structure"
        if report.varying_modifiers:
            structure += f"\nsignal modifiers in some patches only: {escape(_few(list(report.varying_modifiers)))}"
        if report.varying_channels:
            structure += f"\nchannels only some patches add to: {escape(_few(list(report.varying_channels)))}"
    else:
        structure = "(no patch applies)"
    info.add_row("structure", structure)
    built = [g for g in report.models if g.model is not None or g.error is not None]
    if report.failed:
        builds = f"[red]{len(report.failed)} of {report.patch_count} patches cannot build a model[/] (below)"
    else:
        builds = f"[green]all {report.patch_count} patches build a model[/]"
    info.add_row("builds", f"{builds}; {len(built)} model layouts built in {report.seconds:.1f} s")
    console.print(info, highlight=False)

    if model is not None:
        channels = Table(title="channels", title_justify="left")
        channels.add_column("channel")
        channels.add_column("bins", justify="right")
        channels.add_column("samples")
        for channel in model.channels:
            channels.add_row(escape(channel["name"]), str(channel["bins"]), escape(", ".join(channel["samples"])))
        console.print(channels, highlight=False)
        modifiers = Table(title="modifiers", title_justify="left")
        modifiers.add_column("type")
        modifiers.add_column("parameters", justify="right")
        modifiers.add_column("on samples", justify="right")
        for mtype, counts in model.modifiers.items():
            modifiers.add_row(escape(mtype), str(counts["parameters"]), str(counts["uses"]))
        console.print(modifiers, highlight=False)

    if report.failed:
        failed = Table(title="patches that cannot build a model", title_justify="left")
        failed.add_column("patch")
        failed.add_column("reason", overflow="fold")
        for name, reason in report.failed.items():
            failed.add_row(escape(name), escape(reason))
        console.print(failed, highlight=False)

    if list_patches:
        structure_of = {name: i for i, names in enumerate(report.structures.values(), 1) for name in names}
        patches = Table(title="patches", title_justify="left")
        patches.add_column("patch")
        for label in report.labels:
            patches.add_column(escape(label), justify="right")
        patches.add_column("structure", justify="right")
        patches.add_column("builds")
        for name, values in report.patch_values.items():
            cells = [f"{v:g}" for v in values[: len(report.labels)]]
            cells += [""] * (len(report.labels) - len(cells))
            ok = "[red]no[/]" if name in report.failed else "yes"
            patches.add_row(escape(name), *cells, str(structure_of.get(name, "")), ok)
        console.print(patches, highlight=False)
