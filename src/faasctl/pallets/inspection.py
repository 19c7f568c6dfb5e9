"""What a pallet holds: regions, layout, values, digest, model structure, and broken patches.

`structure_signature` tells whether two workspace specs build the same model up to numbers:
the precondition for fitting patches with one batched or compiled likelihood.

`inspect_pallet` examines every patch without building one pyhf model per patch (about 1 s
each on big pallets). Published patches only add a signal sample to some channels, so the
background's samples are shared, not copied, and described once; only the new samples
are checked against pyhf's schema; and pyhf builds one model per *layout* (which modifiers
each channel has, the data shapes, the POI), since whether a model builds depends on that
and not on which sample carries which modifier, nor on the numbers.

Example:
    >>> from faasctl.pallets.inspection import inspect_pallet
    >>> from faasctl.pallets.load import load_pallet
    >>> report = inspect_pallet(load_pallet("examples/simple"))  # doctest: +SKIP
    >>> report.shared_structure, report.failed  # doctest: +SKIP
    (True, {})
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from faasctl.exceptions import PalletError
from faasctl.study import MODIFIER_SETTINGS
from faasctl.pallets.load import Pallet, Patch
from faasctl.pallets.patching import apply_patch

__all__ = [
    "structure_key",
    "structure_signature",
    "inspect_pallet",
    "Inspection",
    "ModelSummary",
    "ModelGroup",
]

log = logging.getLogger(__name__)

#: ``progress(done, total)``, called after each patch is examined.
ProgressCallback = Callable[[int, int], None]


# --- structure -------------------------------------------------------------------------------


def _sorted(items: Any) -> tuple[Any, ...]:
    """Sorted by text: a total order even where None, numbers and tuples meet."""
    return tuple(sorted(items, key=repr))


def _shape(data: Any) -> Any:
    """The shape of a modifier's or sample's data, without its numbers."""
    if isinstance(data, dict):
        return tuple(sorted(((str(k), _shape(v)) for k, v in data.items()), key=lambda kv: kv[0]))
    if isinstance(data, (list, tuple)):
        return len(data)
    return None if data is None else ()


def _modifier(m: Any) -> tuple[str, str, Any]:
    if not isinstance(m, dict):
        return ("", "", repr(m))
    return (str(m.get("name")), str(m.get("type")), _shape(m.get("data")))


def _modifier_order(m: tuple[str, str, Any]) -> tuple[str, str, str]:
    return (m[0], m[1], repr(m[2]))


SampleKey = tuple[Any, tuple[tuple[str, str, Any], ...]]


def _sample_key(sample: Any) -> SampleKey:
    """A sample without its name and numbers: its data's shape and its modifiers."""
    if not isinstance(sample, dict):
        return (repr(sample), ())
    return (_shape(sample.get("data")), tuple(sorted(map(_modifier, sample.get("modifiers") or []), key=_modifier_order)))


@dataclass(frozen=True)
class _SampleInfo:
    digest: str  # of the sample's key: what `structure_signature` sorts and hashes
    shape: Any
    modifiers: frozenset[tuple[str, str, Any]]


def _sample_info(sample: Any) -> _SampleInfo:
    key = _sample_key(sample)
    digest = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()
    return _SampleInfo(digest, key[0], frozenset(key[1]))


def _measurements(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    measurements = []
    for m in spec.get("measurements", []):
        config = m.get("config", {})
        params = _sorted((p.get("name"), bool(p.get("fixed", False)), _shape(p)) for p in config.get("parameters", []))
        measurements.append((m.get("name"), config.get("poi"), params))
    # pyhf builds the model for the first measurement: order matters only there
    return (tuple(measurements[:1]), _sorted(measurements[1:]))


def _bins(samples: Sequence[Any]) -> int:
    return max((len(s.get("data") or []) for s in samples if isinstance(s, dict)), default=0)


def _observations(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    return _sorted((o.get("name"), _shape(o.get("data"))) for o in spec.get("observations", []))


def _signature(spec: Mapping[str, Any], info: Callable[[Any], _SampleInfo]) -> str:
    channels = sorted(
        (str(c.get("name")), _bins(c.get("samples", [])), sorted(info(s).digest for s in c.get("samples", [])))
        for c in spec.get("channels", [])
    )
    key = (channels, _observations(spec), _measurements(spec))
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()


def _layout_key(spec: Mapping[str, Any], info: Callable[[Any], _SampleInfo]) -> tuple[Any, ...]:
    """Coarser than `structure_key`: per channel, the set of modifiers and of data shapes.

    pyhf's model building (parameter sets, POI, shapes) depends on this, not on which
    sample carries which modifier, nor on names of samples or numbers: specs with one
    layout build, or fail, alike. A key for this process only (frozensets, not digests).
    """
    channels = []
    for channel in spec.get("channels", []):
        infos = [info(s) for s in channel.get("samples", [])]
        modifiers = frozenset().union(*(i.modifiers for i in infos))
        channels.append((str(channel.get("name")), len(infos) > 0, frozenset(i.shape for i in infos), modifiers))
    channels.sort(key=lambda c: c[0])
    return (tuple(channels), _observations(spec), _measurements(spec))


def structure_key(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable description of a workspace spec's model structure, without its numbers.

    It holds the channels (name, bins), each channel's samples described by their modifiers
    (name, type, shape of the data), the observations' shapes, and the measurements (POI,
    parameter names, which are fixed, shapes of their settings). Yields, uncertainties,
    bounds and inits are left out.

    Sample names are left out too, and each channel's samples are in a canonical order:
    published patches name the signal sample after its signal point (``DS_400_40_Staus``),
    which changes nothing in the model pyhf builds. Specs with equal keys give models with
    the same parameters, channels, bins and modifier layout, so one compiled likelihood
    serves them all with different numbers.

    Example:
        >>> import pyhf
        >>> a = pyhf.simplemodels.uncorrelated_background([5.0], [50.0], [7.0]).spec
        >>> b = pyhf.simplemodels.uncorrelated_background([12.0], [52.0], [3.0]).spec
        >>> structure_key(a) == structure_key(b)
        True
    """
    channels = sorted(
        (str(c.get("name")), _bins(c.get("samples", [])), _sorted(map(_sample_key, c.get("samples", []))))
        for c in spec.get("channels", [])
    )
    return (tuple(channels), _observations(spec), _measurements(spec))


def structure_signature(spec: Mapping[str, Any]) -> str:
    """The sha256 hex digest of `structure_key`: equal for specs that build the same model up to numbers.

    Example:
        >>> import pyhf
        >>> a = pyhf.simplemodels.uncorrelated_background([5.0], [50.0], [7.0]).spec
        >>> b = pyhf.simplemodels.uncorrelated_background([5.0, 1.0], [50.0, 9.0], [7.0, 2.0]).spec
        >>> structure_signature(a) == structure_signature(b)
        False
    """
    return _signature(spec, _sample_info)


# --- report ----------------------------------------------------------------------------------


@dataclass
class ModelSummary:
    """The model pyhf builds for one patch."""

    patch: str
    channels: list[dict[str, Any]]  # name, bins, samples (names)
    bins: int
    samples: int  # distinct sample names, as pyhf counts them
    parameters: int  # scalar parameters (pyhf's npars)
    parameter_sets: int  # named parameters (one staterror is one set of several parameters)
    poi: str | None
    modifiers: dict[str, dict[str, int]]  # type -> {"parameters": distinct names, "uses": on samples}


@dataclass
class ModelGroup:
    """Patches whose specs share one layout: pyhf built the model of the first of them."""

    patches: list[str]
    model: ModelSummary | None = None
    error: str | None = None  # why pyhf cannot build it; then no patch of the group builds


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
    structures: dict[str, list[str]] = field(default_factory=dict)  # structure_signature -> patches
    models: list[ModelGroup] = field(default_factory=list)
    varying_modifiers: dict[str, int] = field(default_factory=dict)  # "name (type)" -> patches carrying it
    varying_channels: dict[str, int] = field(default_factory=dict)  # channel -> patches adding to it
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
        """Whether every patch that applies gives one `structure_signature`."""
        return len(self.structures) <= 1

    @property
    def model(self) -> ModelSummary | None:
        """The model of the largest group that builds (a representative)."""
        return next((g.model for g in self.models if g.model is not None), None)

    @property
    def ok(self) -> bool:
        """No digest mismatch, and every patch builds a model."""
        return self.digest_status != "mismatch" and not self.failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what ``faasctl pallet inspect --json`` prints)."""
        data = asdict(self)
        data.update(digest_status=self.digest_status, shared_structure=self.shared_structure, ok=self.ok)
        data["model"] = asdict(self.model) if self.model is not None else None
        return data


# --- examining patches -----------------------------------------------------------------------

_SAMPLE_PATH = re.compile(r"^/channels/(0|[1-9][0-9]*)/samples/(0|[1-9][0-9]*|-)$")


def _new_samples(spec: Mapping[str, Any], operations: Sequence[Any]) -> list[tuple[int, int, Any]] | None:
    """The samples ``operations`` put into ``spec``, if all add, replace or remove whole samples; else None.

    Returns (operation index, channel index, sample) for each sample added or replaced: with a
    shared `apply_patch` these are the operations' own values, and every other sample is the
    background's. None (the whole spec must be checked) for any other operation, or when a
    channel is left without samples (the full check names it).
    """
    added: list[tuple[int, int, Any]] = []
    touched: set[int] = set()
    for i, op in enumerate(operations):
        match = _SAMPLE_PATH.match(str(op.get("path", "")))
        if match is None or op.get("op") not in ("add", "replace", "remove"):
            return None
        c = int(match[1])
        touched.add(c)
        if op["op"] != "remove":
            added.append((i, c, op["value"]))
    channels = spec["channels"]
    if any(not isinstance(channels[c].get("samples"), list) or not channels[c]["samples"] for c in touched):
        return None
    return added


class _SampleSchema:
    """pyhf's ``sample`` schema, with each modifier checked against its own type's definition.

    Equivalent to the ``anyOf`` over modifier types in ``defs.json``, and much faster:
    jsonschema need not try (and fail) every other type first, and modifiers that differ
    from one already checked only in their numbers are not checked again (the schema puts
    no bounds on numbers, so any number is as valid as another).
    """

    def __init__(self) -> None:
        import jsonschema
        import pyhf.schema

        # pyhf's validator counts every numbers.Number as a number (True included): so do we
        checker = jsonschema.Draft6Validator.TYPE_CHECKER.redefine("number", lambda _, x: isinstance(x, numbers.Number))
        validator = jsonschema.validators.extend(jsonschema.Draft6Validator, type_checker=checker)
        definitions = pyhf.schema.load_schema("1.0.0/defs.json")["definitions"]
        self.modifiers = {t: validator(d) for t, d in definitions["modifier"].items()}
        shell = json.loads(json.dumps(definitions["sample"]))
        del shell["properties"]["modifiers"]["items"]  # checked one by one below
        self.sample = validator(shell)
        self.dispatch = validator(
            {"type": "object", "properties": {"type": {"enum": sorted(self.modifiers)}}, "required": ["type"]}
        )
        text = json.dumps(definitions["modifier"])
        self._memo: dict[str, tuple[str, str] | None] | None = (
            None if any(k in text for k in ('"minimum"', '"maximum"', '"exclusiveM', '"multipleOf"')) else {}
        )

    def error(self, sample: Any) -> tuple[str, str] | None:
        """The first schema violation in ``sample`` as (field path, message), or None."""
        for err in self.sample.iter_errors(sample):
            return _json_path(err.absolute_path), _short(err.message)
        for k, modifier in enumerate(sample["modifiers"]):
            problem = self._modifier_error(modifier)
            if problem is not None:
                return f"modifiers[{k}]{problem[0]}", problem[1]
        return None

    def _modifier_error(self, modifier: Mapping[str, Any]) -> tuple[str, str] | None:
        key = _NUMBER.sub("0", json.dumps(modifier)) if self._memo is not None else ""
        if self._memo is not None and key in self._memo:
            return self._memo[key]
        problem = None
        for validator in (self.dispatch, None):
            validator = validator or self.modifiers[modifier["type"]]
            for err in validator.iter_errors(modifier):
                problem = _json_path(err.absolute_path, dotted=True), _short(err.message)
                break
            if problem is not None:
                break
        if self._memo is not None:
            self._memo[key] = problem
        return problem


#: Numbers in JSON text (and digits in strings, which stay strings: no harm to the memo's key).
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _json_path(path: Any, *, dotted: bool = False) -> str:
    """``data[0]``, or ``.data[0]`` to append to another path; "" for the top."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text if dotted else text.removeprefix(".")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {_short(str(err), 300) or type(err).__name__}"


def _model_summary(patch: str, spec: Mapping[str, Any]) -> ModelSummary:
    """Build the model and its data as the fits do (pyhf, the study's interpolation codes).

    The steps of ``pyhf.Workspace(spec).model(...)`` and ``.data(model)``, less the
    workspace's deep copy of the spec (the spec was validated before, in parts).
    """
    import pyhf

    measurement = spec["measurements"][0]  # what Workspace.model uses by default
    model = pyhf.Model(
        {"channels": spec["channels"], "parameters": measurement["config"].get("parameters", [])},
        poi_name=measurement["config"]["poi"],
        modifier_settings=MODIFIER_SETTINGS,
        validate=False,
    )
    config = model.config
    observations = {o["name"]: o["data"] for o in spec["observations"]}
    for channel in config.channels:
        if channel not in observations:
            raise KeyError(f"no observations for channel {channel!r}")
        if len(observations[channel]) != config.channel_nbins[channel]:
            raise ValueError(
                f"channel {channel!r} has {config.channel_nbins[channel]} bins but {len(observations[channel])} observations"
            )
    uses: Counter[str] = Counter()
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            uses.update(m["type"] for m in sample.get("modifiers", []))
    distinct = Counter(mtype for _, mtype in config.modifiers)
    return ModelSummary(
        patch=patch,
        channels=[
            {"name": c["name"], "bins": config.channel_nbins[c["name"]], "samples": [s["name"] for s in c["samples"]]}
            for c in sorted(spec["channels"], key=lambda c: c["name"])
        ],
        bins=sum(config.channel_nbins.values()),
        samples=len(config.samples),
        parameters=int(config.npars),
        parameter_sets=len(config.parameters),
        poi=config.poi_name,
        modifiers={t: {"parameters": distinct[t], "uses": uses[t]} for t in sorted(uses)},
    )


class _Examiner:
    def __init__(self, pallet: Pallet, build: bool) -> None:
        self.pallet = pallet
        self.build = build
        background = pallet.background
        # Background samples are shared by every patched spec: describe them once, by identity
        # (the pallet keeps them alive, so ids are not reused).
        self._known = {id(s): _sample_info(s) for c in background["channels"] for s in c["samples"]}
        self._schema: _SampleSchema | None = None
        self.layouts: dict[tuple[Any, ...], ModelGroup] = {}
        self.structures: dict[str, list[str]] = {}
        self.modifiers: Counter[str] = Counter()
        self.channels: Counter[str] = Counter()
        self.applied = 0

    def sample_info(self, sample: Any) -> _SampleInfo:
        known = self._known.get(id(sample))
        return known if known is not None else _sample_info(sample)

    def _patched(self, patch: Patch) -> dict[str, Any]:
        """The patched spec, checked against pyhf's schema; raise PalletError naming the problem."""
        where = patch.source or self.pallet.patchset_file
        patch = patch.loaded()  # read a stored patch once for both uses
        spec = apply_patch(self.pallet.background, patch, shared=True, where=self.pallet.patchset_file)
        added = _new_samples(spec, patch.operations)
        if added is None:
            import pyhf.exceptions
            import pyhf.schema

            try:
                pyhf.schema.validate(spec, "workspace.json")
            except pyhf.exceptions.InvalidSpecification as err:
                raise PalletError(
                    f"{where}: patch {patch.name!r} makes an invalid workspace at {err.path or '(top)'}: "
                    f"{_short(err.parent.message)}"
                ) from err
            return spec
        self._schema = self._schema or _SampleSchema()
        names: set[str] = set()
        channels: set[str] = set()
        for i, c, sample in added:
            problem = self._schema.error(sample)
            if problem is not None:
                path, message = problem
                field = "value" + ("" if not path else path if path.startswith("[") else f".{path}")
                raise PalletError(f"{where}: patch {patch.name!r} operation [{i}] {field}: {message}")
            names.update(f"{m['name']} ({m['type']})" for m in sample["modifiers"])
            channels.add(str(spec["channels"][c].get("name")))
        self.modifiers.update(names)
        self.channels.update(channels)
        return spec

    def examine(self, patch: Patch, report: Inspection) -> None:
        try:
            spec = self._patched(patch)
        except PalletError as err:
            report.failed[patch.name] = str(err)
            return
        self.applied += 1
        infos: dict[int, _SampleInfo] = {}  # new samples: described once for both keys

        def info(sample: Any) -> _SampleInfo:
            if id(sample) not in infos:
                infos[id(sample)] = self.sample_info(sample)
            return infos[id(sample)]

        self.structures.setdefault(_signature(spec, info), []).append(patch.name)
        layout = _layout_key(spec, info)
        group = self.layouts.get(layout)
        if group is None:
            group = self.layouts[layout] = ModelGroup(patches=[])
            if self.build:
                log.info("building the model of %s (layout %d)", patch.name, len(self.layouts))
                try:
                    group.model = _model_summary(patch.name, spec)
                except Exception as err:  # noqa: BLE001 - any pyhf failure is this layout's finding
                    group.error = _reason(err)
        group.patches.append(patch.name)
        if group.error is not None:
            report.failed[patch.name] = f"{patch.source or self.pallet.patchset_file}: patch {patch.name!r}: pyhf cannot build the model: {group.error}"


def inspect_pallet(pallet: Pallet, *, build: bool = True, progress: ProgressCallback | None = None) -> Inspection:
    """Examine every patch of ``pallet``: does it apply and validate, its structure, does pyhf build it.

    Args:
        pallet: a loaded pallet.
        build: build a pyhf model (and its data) per layout; ``False`` only applies and
            checks the patches.
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
    examiner = _Examiner(pallet, build)
    total = len(pallet.patches)
    for done, patch in enumerate(pallet.patches.values(), 1):
        examiner.examine(patch, report)
        if progress is not None:
            progress(done, total)
    report.structures = dict(sorted(examiner.structures.items(), key=lambda kv: -len(kv[1])))
    report.models = sorted(examiner.layouts.values(), key=lambda g: (g.error is not None, -len(g.patches)))
    if len(report.structures) > 1:
        report.varying_modifiers = {k: n for k, n in sorted(examiner.modifiers.items()) if n < examiner.applied}
        report.varying_channels = {k: n for k, n in sorted(examiner.channels.items()) if n < examiner.applied}
    report.seconds = time.perf_counter() - start
    return report
