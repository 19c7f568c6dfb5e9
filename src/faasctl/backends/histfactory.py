"""HistFactory workspaces as dense arrays, with pyhf 0.7.6's semantics, built fast per patch.

The compiled engine (`faasctl.backends.jax`) fits one array layout for every patch of a
pallet. This module turns a patched workspace into that layout:

* every bin of every (channel, sample) pair is one *cell* (channels sorted by name, then
  samples sorted by name, as pyhf orders its bins);
* every model parameter is one row (in pyhf's parameter order), and each modifier becomes
  an entry of a ``(parameter, cell)`` array: ``histosys`` as code4p up/down deltas,
  ``normsys`` as code4 hi/lo factors, and ``normfactor``, ``lumi``, ``shapefactor``,
  ``staterror`` and ``shapesys`` as a 0/1 mask of the cells the parameter multiplies;
* constraints, inits, bounds, fixed flags and auxiliary data are per-parameter vectors.

The expected count of a cell is then ``(nom + sum_p delta_p(theta_p)) * prod_p g_p(theta_p)``
with ``g_p = code4_p(theta_p) * (theta_p if masked else 1)``: exactly pyhf's
``expected_data``. Arrays are padded (inert cells and fixed, unconstrained parameters)
to sizes that rarely change between patches, so one compiled function serves a whole pallet.

Only what differs between patches is rebuilt per patch: samples of the background are
parsed once per background (see `BackgroundCache`), the patch is applied copy-on-write
instead of deep-copying the background (`faasctl.pallets.apply_patch` with ``shared=True``), and
the parameter layout is cached per model structure (`Structure`). The caches key objects by
identity only while they hold them, so that an ``id()`` is never reused for another object under them.

Anything this module does not implement exactly as pyhf does raises `UnsupportedModel`, as
does a workspace that pyhf rejects as well; the jax backend then hands the patch to plain
pyhf. Any other exception is a bug here and propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from faasctl.exceptions import FaasctlError

__all__ = [
    "UnsupportedModel",
    "ModelArrays",
    "Structure",
    "BackgroundCache",
    "build_arrays",
    "MODIFIER_TYPES",
]

log = logging.getLogger(__name__)

#: pyhf's ``histfactory_set`` order, which decides the parameter order.
MODIFIER_TYPES = ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror")
#: Modifiers with one parameter per bin of the channel they act on.
PER_BIN_TYPES = ("shapefactor", "shapesys", "staterror")
#: Keys of a measurement's parameter config that pyhf lets a user override.
PARAMSET_KEYS = ("inits", "bounds", "fixed", "auxdata", "sigmas", "factors")
#: The interpolation codes this engine implements.
SUPPORTED_CODES = {"normsys": "code4", "histosys": "code4p"}

# Padding granularity: parameters and cells are rounded up to these multiples.
PAR_QUANTUM = 8
CELL_QUANTUM = 16


class UnsupportedModel(FaasctlError):
    """Raised when a workspace uses a feature the compiled engine does not implement.

    The jax backend catches it and fits the patch with plain pyhf instead.
    """


# --- parsed samples ------------------------------------------------------------------------


@dataclass
class SampleBlock:
    """One sample's numbers, parsed once (background samples are cached per background)."""

    nom: np.ndarray
    #: modifier type -> [(name, data)]: data is the uncertainty array for staterror and
    #: shapesys, None otherwise (histosys and normsys data are in the arrays below)
    mods: dict[str, list[tuple[str, Any]]]
    #: sorted (name, type) pairs, as pyhf orders modifiers
    keys: tuple[tuple[str, str], ...]
    # ready to scatter into the (parameter, cell) arrays
    hs_up: np.ndarray  # (k, nbins): hi - nom, one row per histosys in mods order
    hs_dn: np.ndarray  # (k, nbins): nom - lo
    ns_hi: np.ndarray  # (k, 1)
    ns_lo: np.ndarray  # (k, 1)
    keyset: frozenset[tuple[str, str]] = frozenset()
    #: id(structure) -> (structure, parameter rows of its histosys, normsys and normfactor/lumi names)
    rows: dict[int, tuple[Structure, tuple[list[int], list[int], list[int]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keyset = frozenset(self.keys)

    def names(self, *types: str) -> list[str]:
        return [n for t in types for n, _ in self.mods[t]]


def parse_sample(sample: Mapping[str, Any], nbins: int, where: str) -> SampleBlock:
    """Parse ``sample`` (in a channel of ``nbins`` bins) into a `SampleBlock`."""
    nom = np.asarray(sample["data"], dtype=float)
    if nom.shape != (nbins,):
        raise UnsupportedModel(f"{where}: data has {nom.size} bins, the channel has {nbins}")
    # pyhf keys modifiers by type/name in a dict: a repeated one replaces the earlier one
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for mod in sample["modifiers"]:
        if mod["type"] not in MODIFIER_TYPES:
            raise UnsupportedModel(f"{where}: modifier type {mod['type']!r} is not supported")
        latest.pop((mod["type"], mod["name"]), None)
        latest[(mod["type"], mod["name"])] = mod
    mods: dict[str, list[tuple[str, Any]]] = {t: [] for t in MODIFIER_TYPES}
    hs_hi, hs_lo, ns_hi, ns_lo = [], [], [], []
    for (mtype, name), mod in latest.items():
        data = mod.get("data")
        parsed: Any = None
        if mtype == "histosys":
            hs_hi.append(data["hi_data"])
            hs_lo.append(data["lo_data"])
        elif mtype == "normsys":
            ns_hi.append([data["hi"]])
            ns_lo.append([data["lo"]])
        elif mtype in ("staterror", "shapesys"):
            parsed = np.asarray(data, dtype=float)
            if parsed.shape != (nbins,):
                raise UnsupportedModel(f"{where}: {mtype} {name!r} has the wrong number of bins")
        mods[mtype].append((name, parsed))
    try:
        hi, lo = np.array(hs_hi, dtype=float).reshape(-1, nbins), np.array(hs_lo, dtype=float).reshape(-1, nbins)
    except ValueError as err:
        raise UnsupportedModel(f"{where}: a histosys has the wrong number of bins") from err
    nhi, nlo = np.array(ns_hi, dtype=float).reshape(-1, 1), np.array(ns_lo, dtype=float).reshape(-1, 1)
    if not (np.all(nhi > 0) and np.all(nlo > 0)):
        raise UnsupportedModel(f"{where}: a normsys has a non-positive factor")
    return SampleBlock(
        nom=nom, mods=mods, keys=tuple(sorted((n, t) for t, n in latest)),
        hs_up=hi - nom, hs_dn=nom - lo, ns_hi=nhi, ns_lo=nlo,
    )


class BackgroundCache:
    """Parsed samples and model structures of one background workspace.

    A shared `faasctl.pallets.apply_patch` keeps the background's sample objects, so a sample
    whose object is the background's own is parsed once per worker, not once per patch. Samples are keyed
    by identity: the cache holds every object it keys (the background's samples as they
    were when it was made, parsed blocks, structures), so no key outlives its object and is
    reused for another one, even if the background is changed in place.
    """

    def __init__(self, background: Mapping[str, Any]) -> None:
        self.background = background
        samples = [s for c in background.get("channels", []) for s in c.get("samples", [])]
        self._samples = samples  # holds them, so their ids in _known stay theirs
        self._known = {id(s) for s in samples}
        self._blocks: dict[int, tuple[Any, SampleBlock]] = {}
        #: model structures by structure key, shared by all patches of this background
        self.structures: dict[tuple[Any, ...], Structure] = {}
        self._cached_blocks: set[int] = set()
        self._unions: dict[tuple[int, ...], frozenset[tuple[str, str]]] = {}
        self._reprs: dict[int, tuple[Any, str]] = {}

    def union(self, blocks: list[SampleBlock]) -> frozenset[tuple[str, str]]:
        """The (name, type) pairs of all ``blocks`` (memoised for the background's own)."""
        known = tuple(id(b) for b in blocks if self._is_cached(b))
        base = self._unions.get(known)
        if base is None:
            base = frozenset().union(*(b.keyset for b in blocks if self._is_cached(b)))
            self._unions[known] = base
            while len(self._unions) > 64:
                self._unions.pop(next(iter(self._unions)))
        extra = [b.keyset for b in blocks if not self._is_cached(b)]
        return base.union(*extra) if extra else base

    def _is_cached(self, block: SampleBlock) -> bool:
        return id(block) in self._cached_blocks

    def describe(self, obj: Any) -> str:
        """``repr(obj)``, memoised by identity for objects of the background."""
        hit = self._reprs.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        text = repr(obj)
        if len(self._reprs) > 256:  # objects from patches: keep the memo small
            self._reprs.clear()
        self._reprs[id(obj)] = (obj, text)
        return text

    def block(self, sample: Mapping[str, Any], nbins: int, where: str) -> SampleBlock:
        key = id(sample)
        hit = self._blocks.get(key)
        if hit is not None and hit[0] is sample and hit[1].nom.size == nbins:
            return hit[1]
        block = parse_sample(sample, nbins, where)
        if key in self._known:
            self._blocks[key] = (sample, block)
            self._cached_blocks.add(id(block))
        return block


# --- parameters ----------------------------------------------------------------------------


@dataclass
class ParamSet:
    """One named parameter set (pyhf ``paramset``) and its static configuration."""

    name: str
    kind: str  # the modifier type that defines it (histosys and normsys share "alpha")
    start: int
    n: int
    #: user overrides from the measurement config (validated)
    user: dict[str, Any] = field(default_factory=dict)


@dataclass
class Structure:
    """The parameter layout shared by all patches with the same model structure.

    The structure of a patched workspace is its channels (and bins), the per-bin
    modifiers with the channels they act on, and the set of (modifier name, type) pairs:
    everything that decides the parameters, but not their values.
    """

    key: tuple[Any, ...]
    channels: tuple[tuple[str, int], ...]
    paramsets: dict[str, ParamSet]
    order: list[str]
    npars: int
    poi: int
    poi_name: str
    #: per-bin parameter sets: name -> the channels (sorted) whose bins map to parameters
    bin_channels: dict[str, tuple[str, ...]]
    #: per-parameter vectors of the parameter sets that do not depend on the samples' data
    vectors: dict[str, np.ndarray] | None = None

    @property
    def par_names(self) -> list[str]:
        names = []
        for name in self.order:
            ps = self.paramsets[name]
            names += [name] if ps.kind not in PER_BIN_TYPES else [f"{name}[{i}]" for i in range(ps.n)]
        return names


@dataclass
class ModelArrays:
    """The numbers of one patched workspace, in the padded layout the kernel compiles for.

    ``P`` parameters, ``C`` cells and ``B`` bins (padded ``P`` and ``C``).
    """

    structure: Structure
    nom: np.ndarray  # (C,)
    bin_index: np.ndarray  # (C,) int: the bin each cell adds to
    hs_up: np.ndarray  # (P, C) histosys hi - nom
    hs_dn: np.ndarray  # (P, C) histosys nom - lo
    ns_hi: np.ndarray  # (P, C) normsys hi factor (1 where absent)
    ns_lo: np.ndarray  # (P, C) normsys lo factor (1 where absent)
    lin: np.ndarray  # (P, C) 1 where the parameter multiplies the cell
    gauss: np.ndarray  # (P,) bool: Gaussian constraint
    sigma: np.ndarray  # (P,)
    pois: np.ndarray  # (P,) bool: Poisson constraint (shapesys)
    tau: np.ndarray  # (P,) Poisson rate factors
    aux: np.ndarray  # (P,) observed auxiliary data (by parameter)
    init: np.ndarray  # (P,)
    lower: np.ndarray  # (P,)
    upper: np.ndarray  # (P,)
    fixed: np.ndarray  # (P,) bool
    data: np.ndarray  # (B,) observed counts
    poi: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.hs_up.shape[0], self.hs_up.shape[1], self.data.size)


def _round_up(n: int, quantum: int) -> int:
    return max(quantum, -(-n // quantum) * quantum)


def _defaults(kind: str, n: int) -> dict[str, Any]:
    """pyhf's ``required_parset`` defaults (data-dependent ones are filled in later)."""
    if kind in ("histosys", "normsys"):
        return {"inits": [0.0], "bounds": [[-5.0, 5.0]], "fixed": False, "auxdata": [0.0], "sigmas": "undefined",
                "factors": "undefined"}
    if kind == "lumi":
        return {"inits": None, "bounds": None, "fixed": False, "auxdata": None, "sigmas": None, "factors": "undefined"}
    if kind == "normfactor":
        return {"inits": [1.0], "bounds": [[0.0, 10.0]], "fixed": False, "auxdata": "undefined",
                "sigmas": "undefined", "factors": "undefined"}
    if kind == "shapefactor":
        return {"inits": [1.0] * n, "bounds": [[0.0, 10.0]] * n, "fixed": False, "auxdata": "undefined",
                "sigmas": "undefined", "factors": "undefined"}
    if kind == "staterror":
        return {"inits": [1.0] * n, "bounds": [[1e-10, 10.0]] * n, "fixed": [False] * n, "auxdata": [1.0] * n,
                "sigmas": [1.0] * n, "factors": "undefined"}
    if kind == "shapesys":
        return {"inits": [1.0] * n, "bounds": [[1e-10, 10.0]] * n, "fixed": [False] * n, "auxdata": [1.0] * n,
                "sigmas": "undefined", "factors": [1.0] * n}
    raise UnsupportedModel(f"modifier type {kind!r} is not supported")


def _check_user(ps: ParamSet, config: Mapping[str, Any]) -> dict[str, Any]:
    """The user overrides pyhf would accept for ``ps`` (else `UnsupportedModel`)."""
    defaults = _defaults(ps.kind, ps.n)
    user = {}
    for key in PARAMSET_KEYS:
        if key not in config:
            continue
        value, default = config[key], defaults[key]
        if default == "undefined":
            if value:
                raise UnsupportedModel(f"parameter {ps.name!r} ({ps.kind}) does not take {key!r}")
            continue
        if isinstance(value, list) and isinstance(default, list) and len(value) != len(default):
            raise UnsupportedModel(f"parameter {ps.name!r}: {key} has {len(value)} values, expected {len(default)}")
        user[key] = value
    return user


def _structure(
    cells: list[tuple[str, str, SampleBlock]],
    channels: tuple[tuple[str, int], ...],
    measurement: Mapping[str, Any],
    key: tuple[Any, ...],
) -> Structure:
    """The parameter layout of a model: pyhf's parameter order, sizes and user config."""
    # pyhf registers parameter sets builder by builder (histfactory_set order), each walking
    # channels, samples and modifiers in sorted order; staterror registers in name order.
    first: dict[str, list[str]] = {t: [] for t in MODIFIER_TYPES}
    kinds: dict[str, str] = {}
    bin_channels: dict[str, set[str]] = {}
    nbins = dict(channels)
    for channel, _sample, block in cells:
        for name, mtype in block.keys:
            if name not in kinds:
                kinds[name] = mtype
            elif kinds[name] != mtype and {kinds[name], mtype} != {"histosys", "normsys"}:
                raise UnsupportedModel(f"modifier name {name!r} is used with types {kinds[name]!r} and {mtype!r}")
            if name not in first[mtype]:
                first[mtype].append(name)
            if mtype in PER_BIN_TYPES:
                bin_channels.setdefault(name, set()).add(channel)
    first["staterror"].sort()
    order = list(dict.fromkeys(n for t in MODIFIER_TYPES for n in first[t]))

    params = {p["name"]: p for p in measurement.get("config", {}).get("parameters", [])}
    paramsets: dict[str, ParamSet] = {}
    start = 0
    for name in order:
        kind = kinds[name]
        if kind == "normsys":
            kind = "histosys"  # one constrained-by-normal alpha, whichever type came first
        if kind in PER_BIN_TYPES:
            chans = sorted(bin_channels[name])
            if kind == "shapesys" and len(chans) != 1:
                raise UnsupportedModel(f"shapesys {name!r} acts on several channels")
            if kind == "shapefactor":
                sizes = {nbins[c] for c in chans}
                if len(sizes) != 1:
                    raise UnsupportedModel(f"shapefactor {name!r} acts on channels of different sizes")
                n = sizes.pop()
            else:
                n = sum(nbins[c] for c in chans)
        else:
            n = 1
        ps = ParamSet(name=name, kind=kind, start=start, n=n)
        ps.user = _check_user(ps, params.get(name, {}))
        paramsets[name] = ps
        start += n
    if not paramsets:
        raise UnsupportedModel("the model has no parameters")

    poi_name = measurement.get("config", {}).get("poi")
    if poi_name not in paramsets or paramsets[poi_name].n != 1 or paramsets[poi_name].kind in PER_BIN_TYPES:
        raise UnsupportedModel(f"POI {poi_name!r} is not a scalar parameter of the model")
    return Structure(
        key=key,
        channels=channels,
        paramsets=paramsets,
        order=order,
        npars=start,
        poi=paramsets[poi_name].start,
        poi_name=poi_name,
        bin_channels={k: tuple(sorted(v)) for k, v in bin_channels.items()},
    )


def _as_list(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise UnsupportedModel(f"{what} has {len(value)} values, expected {n}")
        return list(value)
    return [value] * n


def build_arrays(spec: Mapping[str, Any], cache: BackgroundCache | None = None, *, min_cells: int = 0) -> ModelArrays:
    """The padded arrays of a (patched) workspace spec.

    Args:
        spec: a workspace (channels, observations, measurements); read only.
        cache: parsed samples and structures of the background ``spec`` was patched from
            (see `BackgroundCache`).
        min_cells: pad the cells to at least this many (keeps one size for a pallet).

    Raises:
        UnsupportedModel: the workspace uses something this engine does not implement, or
            pyhf rejects it too.
    """
    try:
        return _build_arrays(spec, cache, min_cells)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # Reading a workspace that pyhf accepts must not fail: that is a bug here, and it
        # propagates. One that pyhf rejects as well (say a patch removed a required key) is
        # not the engine's to judge: pyhf names the problem.
        rejected = _pyhf_rejects(spec)
        if rejected is None:
            raise
        raise UnsupportedModel(f"pyhf rejects the workspace ({rejected})") from err


def _pyhf_rejects(spec: Mapping[str, Any]) -> str | None:
    """pyhf's error for ``spec`` (workspace or model), or None when pyhf builds its model."""
    import pyhf

    from faasctl.study import MODIFIER_SETTINGS

    try:
        pyhf.Workspace(dict(spec)).model(modifier_settings=MODIFIER_SETTINGS)
    except Exception as err:  # noqa: BLE001 - pyhf's errors have no common base; any one is a rejection
        return f"{type(err).__name__}: {err}"
    return None


def _build_arrays(spec: Mapping[str, Any], cache: BackgroundCache | None, min_cells: int) -> ModelArrays:
    measurements = spec.get("measurements") or []
    if not measurements:
        raise UnsupportedModel("the workspace has no measurement")
    measurement = measurements[0]

    # channels and cells, in pyhf's bin order (channels sorted, then samples sorted)
    by_name = {}
    for channel in spec["channels"]:
        if channel["name"] in by_name:
            raise UnsupportedModel(f"channel {channel['name']!r} is defined twice")
        by_name[channel["name"]] = channel
    channels = tuple((name, len(by_name[name]["samples"][0]["data"])) for name in sorted(by_name))
    cells: list[tuple[str, str, SampleBlock]] = []
    for name, nbins in channels:
        samples = {}
        for sample in by_name[name]["samples"]:
            if sample["name"] in samples:
                raise UnsupportedModel(f"sample {sample['name']!r} appears twice in channel {name!r}")
            samples[sample["name"]] = sample
        for sname in sorted(samples):
            where = f"channel {name!r} sample {sname!r}"
            block = cache.block(samples[sname], nbins, where) if cache else parse_sample(samples[sname], nbins, where)
            cells.append((name, sname, block))

    # the structure: what decides the parameters (not their values)
    mod_keys = cache.union([block for *_, block in cells]) if cache else frozenset().union(
        *(block.keyset for *_, block in cells)
    )
    per_bin = frozenset(
        (n, mtype, channel) for channel, _s, block in cells for mtype in PER_BIN_TYPES for n, _ in block.mods[mtype]
    )
    config = measurement.get("config")
    skey = (channels, mod_keys, per_bin, cache.describe(config) if cache else repr(config))
    structure = cache.structures.get(skey) if cache else None
    if structure is None:
        structure = _structure(cells, channels, measurement, skey)
        if cache:
            cache.structures[skey] = structure
    ps_by_name = structure.paramsets

    # layout sizes
    B = sum(n for _, n in channels)
    ncells = sum(block.nom.size for *_, block in cells)
    P = _round_up(structure.npars, PAR_QUANTUM)
    C = _round_up(max(ncells, min_cells), CELL_QUANTUM)

    nom = np.zeros(C)
    bin_index = np.zeros(C, dtype=np.int32)
    hs_up = np.zeros((P, C))
    hs_dn = np.zeros((P, C))
    ns_hi = np.ones((P, C))
    ns_lo = np.ones((P, C))
    lin = np.zeros((P, C))

    bin_offset = {}
    offset = 0
    for name, nbins in channels:
        bin_offset[name] = offset
        offset += nbins
    # local bin -> parameter offset for per-bin sets acting on several channels
    perbin_offset = {}
    for name, chans in structure.bin_channels.items():
        ps = ps_by_name[name]
        o = 0
        for c in chans:
            perbin_offset[(name, c)] = 0 if ps.kind == "shapefactor" else o
            o += dict(channels)[c]

    staterr: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    shapesys: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cell = 0
    for channel, sname, block in cells:
        nb = block.nom.size
        sl = slice(cell, cell + nb)
        nom[sl] = block.nom
        b0 = bin_offset[channel]
        bin_index[sl] = np.arange(b0, b0 + nb)
        mods = block.mods
        hit = block.rows.get(id(structure))
        if hit is not None and hit[0] is structure:
            rows = hit[1]
        else:
            rows = (
                [ps_by_name[n].start for n in block.names("histosys")],
                [ps_by_name[n].start for n in block.names("normsys")],
                [ps_by_name[n].start for n in block.names("normfactor", "lumi")],
            )
            if len(block.rows) >= 16:  # structures of uncached patches: keep the memo small
                block.rows.clear()
            block.rows[id(structure)] = (structure, rows)
        if rows[0]:
            hs_up[rows[0], sl] = block.hs_up
            hs_dn[rows[0], sl] = block.hs_dn
        if rows[1]:
            ns_hi[rows[1], sl] = block.ns_hi
            ns_lo[rows[1], sl] = block.ns_lo
        if rows[2]:
            lin[rows[2], sl] = 1.0
        for mtype in PER_BIN_TYPES:
            for n, data in mods[mtype]:
                p0 = ps_by_name[n].start + perbin_offset[(n, channel)]
                lin[np.arange(p0, p0 + nb), np.arange(cell, cell + nb)] = 1.0
                if mtype == "staterror":
                    staterr.setdefault(n, {}).setdefault(sname, {})[channel] = (data, block.nom)
                elif mtype == "shapesys":
                    if n in shapesys:
                        raise UnsupportedModel(f"shapesys {n!r} acts on more than one sample")
                    shapesys[n] = (data, block.nom)
        cell += nb
    if cell < C:
        bin_index[cell:] = 0  # padding cells: nominal 0, no modifiers

    # per-parameter vectors, in pyhf's paramset semantics: computed once per structure,
    # except for the data-dependent staterror and shapesys sets
    if structure.vectors is None:
        structure.vectors = _parameter_vectors(structure, P)
    vec = {k: v.copy() for k, v in structure.vectors.items()}
    data_dependent = [n for n in structure.order if ps_by_name[n].kind in ("staterror", "shapesys")]
    if data_dependent:
        samples_by_channel: dict[str, dict[str, SampleBlock]] = {}
        for channel, sname, block in cells:
            samples_by_channel.setdefault(channel, {})[sname] = block
        for name in data_dependent:
            ps = ps_by_name[name]
            d = _defaults(ps.kind, ps.n)
            if ps.kind == "staterror":
                d["sigmas"], d["fixed"] = _staterror_sigmas(
                    name, staterr[name], structure.bin_channels[name], samples_by_channel, dict(channels)
                )
            else:
                unc, snom = shapesys[name]
                valid = (snom > 0) & (unc > 0)
                factors = np.where(valid, snom**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
                d["factors"] = factors.tolist()
                d["auxdata"] = factors.tolist()
                d["fixed"] = (~valid).tolist()
            _fill_paramset(vec, ps, d)
    gauss, pois, sigma, tau, aux = vec["gauss"], vec["pois"], vec["sigma"], vec["tau"], vec["aux"]
    init, lower, upper, fixed = vec["init"], vec["lower"], vec["upper"], vec["fixed"]

    real = slice(0, structure.npars)
    if np.any(init[real] < lower[real]) or np.any(init[real] > upper[real]):
        raise UnsupportedModel("an initial parameter value lies outside its bounds")
    poi = structure.poi
    if fixed[poi]:
        raise UnsupportedModel(f"the POI {structure.poi_name!r} is fixed")
    if not (lower[poi] <= 0.0 <= upper[poi] and lower[poi] <= 1.0 <= upper[poi]):
        raise UnsupportedModel(f"the POI {structure.poi_name!r} bounds do not contain 0 and 1")
    if np.any(sigma[gauss] <= 0) or np.any(tau[pois] <= 0):
        raise UnsupportedModel("a constraint has a non-positive width")
    # padding: inert, fixed at 0 with bounds [0, 0]

    observations = {obs["name"]: obs["data"] for obs in spec["observations"]}
    data = np.concatenate([np.asarray(observations[name], dtype=float) for name, _ in channels])
    if data.size != B:
        raise UnsupportedModel("observations do not match the channels' bins")
    if not (np.all(np.isfinite(data)) and np.all(np.isfinite(nom)) and np.all(np.isfinite(hs_up))
            and np.all(np.isfinite(hs_dn))):
        raise UnsupportedModel("the workspace holds non-finite numbers")
    return ModelArrays(
        structure=structure, nom=nom, bin_index=bin_index, hs_up=hs_up, hs_dn=hs_dn, ns_hi=ns_hi, ns_lo=ns_lo,
        lin=lin, gauss=gauss, sigma=sigma, pois=pois, tau=tau, aux=aux, init=init, lower=lower, upper=upper,
        fixed=fixed, data=data, poi=poi,
    )


def _parameter_vectors(structure: Structure, npad: int) -> dict[str, np.ndarray]:
    """Per-parameter vectors from defaults and the measurement config (padding: fixed at 0)."""
    vec = {
        "gauss": np.zeros(npad, dtype=bool),
        "pois": np.zeros(npad, dtype=bool),
        "sigma": np.ones(npad),
        "tau": np.ones(npad),
        "aux": np.zeros(npad),
        "init": np.zeros(npad),
        "lower": np.zeros(npad),
        "upper": np.zeros(npad),
        "fixed": np.ones(npad, dtype=bool),
    }
    for name in structure.order:
        ps = structure.paramsets[name]
        if ps.kind not in ("staterror", "shapesys"):
            _fill_paramset(vec, ps, _defaults(ps.kind, ps.n))
    return vec


def _fill_paramset(vec: dict[str, np.ndarray], ps: ParamSet, d: dict[str, Any]) -> None:
    """Write one parameter set (defaults ``d`` overridden by the user config) into ``vec``."""
    d = {**d, **ps.user}
    name = ps.name
    sl = slice(ps.start, ps.start + ps.n)
    if d["inits"] is None or d["bounds"] is None:
        raise UnsupportedModel(f"parameter {name!r} ({ps.kind}) needs inits and bounds in the measurement config")
    vec["init"][sl] = _as_list(d["inits"], ps.n, f"{name} inits")
    bounds = np.asarray(d["bounds"], dtype=float)
    if bounds.shape != (ps.n, 2):
        raise UnsupportedModel(f"parameter {name!r}: bounds {d['bounds']!r} are not {ps.n} [low, high] pairs")
    vec["lower"][sl], vec["upper"][sl] = bounds[:, 0], bounds[:, 1]
    vec["fixed"][sl] = _as_list(d["fixed"], ps.n, f"{name} fixed")
    if ps.kind in ("histosys", "lumi", "staterror"):
        if d["auxdata"] is None:
            raise UnsupportedModel(f"parameter {name!r} ({ps.kind}) needs auxdata in the measurement config")
        vec["gauss"][sl] = True
        vec["aux"][sl] = _as_list(d["auxdata"], ps.n, f"{name} auxdata")
        # pyhf uses the paramset's sigmas when set (and non-empty), else width 1
        sig = d.get("sigmas")
        vec["sigma"][sl] = _as_list(sig, ps.n, f"{name} sigmas") if sig not in (None, "undefined") and sig else 1.0
    elif ps.kind == "shapesys":
        vec["pois"][sl] = True
        vec["aux"][sl] = _as_list(d["auxdata"], ps.n, f"{name} auxdata")
        vec["tau"][sl] = _as_list(d["factors"], ps.n, f"{name} factors")


def _staterror_sigmas(
    name: str,
    by_sample: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    chans: tuple[str, ...],
    samples_by_channel: dict[str, dict[str, SampleBlock]],
    nbins: dict[str, int],
) -> tuple[list[float], list[bool]]:
    """pyhf's staterror widths: relative uncertainty of the summed samples, per bin.

    Sums run over the samples that carry the modifier; bins without uncertainty are fixed
    (and get width 1, as pyhf does).
    """
    for sname, per_channel in by_sample.items():
        if tuple(sorted(per_channel)) != chans:
            raise UnsupportedModel(f"staterror {name!r} acts on different channels for different samples")
    sigmas: list[float] = []
    for c in chans:
        nomsall = np.zeros(nbins[c])
        for sname in by_sample:
            block = samples_by_channel[c].get(sname)
            if block is not None:
                nomsall = nomsall + block.nom
        relerr2 = np.zeros(nbins[c])
        positive = nomsall > 0
        for sname, per_channel in by_sample.items():
            unc = per_channel[c][0]
            relerr2 = relerr2 + np.where(positive, (unc / np.where(positive, nomsall, 1.0)) ** 2, 0.0)
        sigmas += np.sqrt(relerr2).tolist()
    fixed = [s == 0 for s in sigmas]
    return [1.0 if f else s for s, f in zip(sigmas, fixed)], fixed


def check_settings(modifier_settings: Mapping[str, Mapping[str, str]]) -> None:
    """Raise `UnsupportedModel` unless the interpolation codes are the ones implemented."""
    for mtype, code in SUPPORTED_CODES.items():
        got = modifier_settings.get(mtype, {}).get("interpcode", code)
        if got != code:
            raise UnsupportedModel(f"{mtype} interpolation {got!r} is not implemented (only {code})")

