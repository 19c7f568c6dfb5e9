"""What a pallet holds: regions, layout, values, digest, model structure, and broken patches.

`structure_signature` is the test for "these specs build the same model up to numbers":
the precondition for fitting many patches with one batched or compiled likelihood.

Example:
    >>> from faasctl.inspect import inspect_pallet
    >>> from faasctl.pallet import load_pallet
    >>> report = inspect_pallet(load_pallet("examples/simple"))  # doctest: +SKIP
    >>> report.shared_structure, report.failed  # doctest: +SKIP
    (True, {})
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from faasctl.exceptions import PalletError
from faasctl.pallet import MODIFIER_SETTINGS, Pallet, Patch, apply_patch

__all__ = ["structure_key", "structure_signature", "inspect_pallet", "Inspection", "StructureGroup", "ModelSummary"]

log = logging.getLogger(__name__)

#: ``progress(done, total)``, called after each patch is examined.
ProgressCallback = Callable[[int, int], None]


def _sorted(items: Any) -> tuple[Any, ...]:
    """Sorted by JSON text: a total order even where None, numbers and tuples meet."""
    return tuple(sorted(items, key=lambda item: json.dumps(item)))


def _shape(data: Any) -> Any:
    """The shape of a modifier's or sample's data, without its numbers."""
    if isinstance(data, Mapping):
        return _sorted((str(k), _shape(v)) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return len(data)
    return None if data is None else ()


def structure_key(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable description of a workspace spec's model structure, without its numbers.

    It holds the channels (name, bins), each channel's samples described by their modifiers
    (name, type, shape of the data), the observations' shapes, and the measurements (POI,
    parameter names, which are fixed). Bounds, inits, yields and uncertainties are left out.

    Sample names are left out too, and each channel's samples are in a canonical order:
    published patches name the signal sample after its signal point (``DS_400_40_Staus``),
    which changes nothing in the model pyhf builds. Two specs with equal keys give models
    with the same parameters, channels, bins and modifier layout, so one compiled
    likelihood serves both with different numbers.

    Example:
        >>> import pyhf
        >>> a = pyhf.simplemodels.uncorrelated_background([5.0], [50.0], [7.0]).spec
        >>> b = pyhf.simplemodels.uncorrelated_background([12.0], [52.0], [3.0]).spec
        >>> structure_key(a) == structure_key(b)
        True
    """
    channels = []
    for channel in spec.get("channels", []):
        samples = _sorted(
            (
                _shape(sample.get("data")),
                _sorted((m.get("name"), m.get("type"), _shape(m.get("data"))) for m in sample.get("modifiers", [])),
            )
            for sample in channel.get("samples", [])
        )
        bins = max((len(s.get("data", [])) for s in channel.get("samples", [])), default=0)
        channels.append((channel.get("name"), bins, samples))
    observations = _sorted((o.get("name"), _shape(o.get("data"))) for o in spec.get("observations", []))
    measurements = []
    for m in spec.get("measurements", []):
        config = m.get("config", {})
        params = _sorted((p.get("name"), bool(p.get("fixed", False))) for p in config.get("parameters", []))
        measurements.append((m.get("name"), config.get("poi"), params))
    # pyhf builds the model for the first measurement: order matters only there
    return (_sorted(channels), observations, tuple(measurements[:1]), _sorted(measurements[1:]))


def structure_signature(spec: Mapping[str, Any]) -> str:
    """A sha256 hex digest of `structure_key`: equal for specs that build the same model up to numbers.

    Example:
        >>> import pyhf
        >>> a = pyhf.simplemodels.uncorrelated_background([5.0], [50.0], [7.0]).spec
        >>> b = pyhf.simplemodels.uncorrelated_background([5.0, 1.0], [50.0, 9.0], [7.0, 2.0]).spec
        >>> structure_signature(a) == structure_signature(b)
        False
    """
    return hashlib.sha256(json.dumps(structure_key(spec), separators=(",", ":")).encode()).hexdigest()


@dataclass
class ModelSummary:
    """The model pyhf builds for one structure."""

    channels: list[dict[str, Any]]  # name, bins, samples (names, for the example patch)
    bins: int
    samples: int  # distinct sample names, as pyhf counts them
    parameters: int  # scalar parameters (pyhf's npars)
    parameter_sets: int  # named parameters (a staterror is one set of several parameters)
    poi: str | None
    modifiers: dict[str, dict[str, int]]  # type -> {"parameters": distinct names, "uses": (sample, modifier) pairs}


@dataclass
class StructureGroup:
    """Patches whose specs share one `structure_signature`."""

    signature: str
    patches: list[str]
    example: str
    model: ModelSummary | None = None
    error: str | None = None  # why pyhf cannot build the model (then every patch of the group fails)

    @property
    def buildable(self) -> bool:
        return self.error is None


@dataclass
class Inspection:
    """Everything `inspect_pallet` learnt about a pallet."""

    source: str
    region: str | None
    regions: list[str]
    layout: str
    patch_count: int
    labels: list[str]
    values: dict[str, dict[str, float]]  # label -> min, max, distinct
    digest: str
    recorded_digest: str | None
    background_file: str
    patches_file: str
    structures: list[StructureGroup] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # patch -> why it cannot build a model
    patch_values: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def digest_status(self) -> str:
        """``match``, ``mismatch`` or ``not recorded`` (patch files record no digest)."""
        if self.recorded_digest is None:
            return "not recorded"
        return "match" if self.recorded_digest == self.digest else "mismatch"

    @property
    def shared_structure(self) -> bool:
        """Whether every patch that builds a model builds the same structure."""
        return len([g for g in self.structures if g.buildable]) <= 1

    @property
    def ok(self) -> bool:
        """No digest mismatch, and every patch builds a model."""
        return self.digest_status != "mismatch" and not self.failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what ``faasctl pallet inspect --json`` prints)."""
        data = asdict(self)
        data["digest_status"] = self.digest_status
        data["shared_structure"] = self.shared_structure
        data["ok"] = self.ok
        for group, raw in zip(self.structures, data["structures"]):
            raw["buildable"] = group.buildable
        return data


def _model_summary(spec: Mapping[str, Any]) -> ModelSummary:
    """Build the model as the fits do (pyhf, study's interpolation codes) and describe it."""
    import pyhf

    workspace = pyhf.Workspace(dict(spec), validate=True)
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS)
    config = model.config
    uses: Counter[str] = Counter()
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            uses.update(m["type"] for m in sample.get("modifiers", []))
    distinct = Counter(mtype for _, mtype in config.modifiers)
    return ModelSummary(
        channels=[
            {
                "name": c["name"],
                "bins": config.channel_nbins[c["name"]],
                "samples": [s["name"] for s in c["samples"]],
            }
            for c in sorted(spec["channels"], key=lambda c: c["name"])
        ],
        bins=sum(config.channel_nbins.values()),
        samples=len(config.samples),
        parameters=int(config.npars),
        parameter_sets=len(config.parameters),
        poi=config.poi_name,
        modifiers={t: {"parameters": distinct[t], "uses": uses[t]} for t in sorted(uses)},
    )


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"


def inspect_pallet(pallet: Pallet, *, build: bool = True, progress: ProgressCallback | None = None) -> Inspection:
    """Examine every patch of ``pallet``: does it apply, which structure, does pyhf build it.

    pyhf builds one model per distinct `structure_signature` (about 1 s each on big
    pallets), not one per patch: patches that share a structure share the outcome.

    Args:
        pallet: a loaded pallet.
        build: build a pyhf model per structure (``False``: only apply the patches).
        progress: called as ``progress(done, total)`` after each patch.

    Returns:
        The `Inspection`.
    """
    start = time.perf_counter()
    values: dict[str, dict[str, float]] = {}
    for i, label in enumerate(pallet.labels):
        column = [p.values[i] for p in pallet.patches.values() if len(p.values) > i]
        if column:
            values[label] = {"min": min(column), "max": max(column), "distinct": len(set(column))}
    report = Inspection(
        source=pallet.source,
        region=pallet.region,
        regions=list(pallet.regions),
        layout=pallet.layout,
        patch_count=len(pallet.patches),
        labels=list(pallet.labels),
        values=values,
        digest=pallet.digest,
        recorded_digest=pallet.recorded_digest,
        background_file=pallet.background_file,
        patches_file=pallet.patchset_file,
        patch_values={p.name: list(p.values) for p in pallet.patches.values()},
    )
    groups: dict[str, StructureGroup] = {}
    total = len(pallet.patches)
    for done, patch in enumerate(pallet.patches.values(), 1):
        _examine(pallet, patch, groups, report, build)
        if progress is not None:
            progress(done, total)
    report.structures = sorted(groups.values(), key=lambda g: -len(g.patches))
    report.seconds = time.perf_counter() - start
    return report


def _examine(pallet: Pallet, patch: Patch, groups: dict[str, StructureGroup], report: Inspection, build: bool) -> None:
    try:
        spec = apply_patch(pallet.background, patch, where=pallet.patchset_file)
    except PalletError as err:
        report.failed[patch.name] = str(err)
        return
    signature = structure_signature(spec)
    group = groups.get(signature)
    if group is None:
        group = groups[signature] = StructureGroup(signature=signature, patches=[], example=patch.name)
        if build:
            log.info("building the model of %s (structure %s)", patch.name, signature[:12])
            try:
                group.model = _model_summary(spec)
            except Exception as err:  # noqa: BLE001 - any pyhf failure is this group's finding
                group.error = _reason(err)
    group.patches.append(patch.name)
    if group.error is not None:
        report.failed[patch.name] = group.error
