"""The site registry: named site records in YAML files, validated by pydantic.

Where sites come from, first match wins:

1. ``$FAASCTL_SITES_DIR`` (one or more folders separated by ``:``), or, when that
   variable is unset, ``$XDG_CONFIG_HOME/faasctl/sites`` (``~/.config/faasctl/sites``):
   the admin's own ``NAME.yaml`` files, which may also shadow a shipped site;
2. the sites shipped with faasctl, next to this module (``faasctl/sites/*.yaml``).

Any value can be overridden on the command line with ``--set provider.max_blocks=8``
(dotted path = YAML value); overrides are applied before validation, so a misspelled key or
a wrong type is refused like a mistake in the file.

Example:
    >>> from faasctl.sites import list_sites, load_site
    >>> "river" in list_sites()
    True
    >>> load_site("river", overrides=["provider.max_blocks=8"]).provider.max_blocks
    8
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from faasctl.exceptions import SiteConfigError
from faasctl.sites.model import (
    PROVIDER_FAMILIES,
    ContainerSettings,
    EndpointSettings,
    EngineSettings,
    FieldError,
    KubernetesSettings,
    LauncherSettings,
    LocalSettings,
    PamSettings,
    PBSProSettings,
    ProviderSettings,
    SiteRecord,
    SlurmSettings,
)

__all__ = [
    "SiteRecord",
    "EndpointSettings",
    "PamSettings",
    "EngineSettings",
    "ContainerSettings",
    "LauncherSettings",
    "SlurmSettings",
    "PBSProSettings",
    "KubernetesSettings",
    "LocalSettings",
    "ProviderSettings",
    "PROVIDER_FAMILIES",
    "list_sites",
    "load_site",
    "site_paths",
    "shipped_sites_dir",
    "user_sites_dirs",
    "parse_override",
]

SITES_DIR_ENV = "FAASCTL_SITES_DIR"


class SiteLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without YAML 1.1 base-60 numbers.

    Plain YAML 1.1 reads ``walltime: 2:00:00`` as the integer 7200; site files and
    ``--set`` values are read the YAML 1.2 way instead, where it stays a string.

    Aliases (``*name``) are refused: a site needs none, and nested aliases expand
    exponentially ("billion laughs").
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor}: site files may not use aliases", event.start_mark
            )
        return super().compose_node(parent, index)


def _yaml_error(err: yaml.YAMLError) -> str:
    """One line for a YAML error: line, column and problem (PyYAML's own text spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"[:300]


SiteLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# PyYAML's own int/float patterns, minus their sexagesimal alternatives.
SiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
SiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def shipped_sites_dir() -> Path:
    """The folder of the site files shipped with faasctl."""
    return Path(str(resources.files(__name__)))


def user_sites_dirs() -> list[Path]:
    """The admin's site folders, searched before the shipped sites (see module docs)."""
    env = os.environ.get(SITES_DIR_ENV)
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(config_home) / "faasctl" / "sites"]


def site_paths() -> dict[str, Path]:
    """Every known site name with the file it is read from (admin folders first)."""
    found: dict[str, Path] = {}
    for folder in [*user_sites_dirs(), shipped_sites_dir()]:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def list_sites() -> list[str]:
    """Names of all known sites, sorted."""
    return sorted(site_paths())


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``provider.max_blocks=8`` into (["provider", "max_blocks"], 8).

    The value is read as a YAML scalar (``8`` -> 8, ``null`` -> None, ``"01:00:00"`` stays a string).

    Raises:
        SiteConfigError: when ``text`` is not ``dotted.path=value``.
    """
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part) for part in path):
        raise SiteConfigError(f"--set {text!r}: expected dotted.key=value, e.g. provider.max_blocks=8")
    try:
        value = yaml.load(raw, Loader=SiteLoader) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise SiteConfigError(f"--set {text!r}: the value is not valid YAML: {_yaml_error(err)}") from err
    return path, value


def _apply_override(data: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:  # e.g. container: null -> container.type=apptainer creates it
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise SiteConfigError(f"--set {text!r}: {where} is {child!r}, not a mapping")
        node = child
    node[path[-1]] = value


def _read_site_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=SiteLoader)
    except OSError as err:
        raise SiteConfigError(f"site file {path}: cannot read it: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise SiteConfigError(f"site file {path}: not valid YAML: {_yaml_error(err)}") from err
    if not isinstance(data, dict):
        raise SiteConfigError(f"site file {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _lookup(data: Any, loc: Sequence[str]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _describe(err: ValidationError, data: dict[str, Any], where: str, set_paths: set[str]) -> str:
    lines = []
    for item in err.errors(include_url=False):
        ctx_error = (item.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FieldError):
            field, value, msg = ctx_error.field, ctx_error.value, str(ctx_error)
        else:
            loc = [str(p) for p in item["loc"]]
            # drop the union tag pydantic inserts: provider.SlurmProvider.max_blocks -> provider.max_blocks
            if len(loc) > 1 and loc[0] == "provider" and loc[1] in PROVIDER_FAMILIES:
                del loc[1]
            if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc.append("type")
            field = ".".join(loc) or "(record)"
            value = _lookup(data, loc)
            msg = item["msg"].removeprefix("Value error, ")
            if item["type"] == "union_tag_invalid":
                msg = f"unknown provider; faasctl has endpoint templates for {', '.join(PROVIDER_FAMILIES)}"
        origin = " (from --set)" if field in set_paths else ""
        lines.append(f"{field} = {value!r}{origin}: {msg}")
    return f"{where}: " + "; ".join(lines)


def load_site(name: str, *, site_file: Path | None = None, overrides: Sequence[str] = ()) -> SiteRecord:
    """Read, override and validate one site record.

    Args:
        name: the site's name (see `list_sites`). With ``site_file`` it may be empty (the
            file's ``name``, else its stem); a file without ``name`` takes this one, a file
            with another ``name`` is refused.
        site_file: read this file instead of looking the name up in the registry.
        overrides: ``dotted.key=value`` strings applied on top of the file (``--set``).

    Returns:
        The validated `SiteRecord`; ``.source`` is the file it came from.

    Raises:
        SiteConfigError: unknown site, unreadable file, or a value that fails validation
            (the message names the site, its file, the field and the value).

    Example:
        >>> load_site("polaris").provider.type
        'PBSProProvider'
    """
    if site_file is not None:
        path = Path(site_file)
    else:
        paths = site_paths()
        if name not in paths:
            known = ", ".join(sorted(paths)) or "none"
            raise SiteConfigError(f"unknown site {name!r}; known sites: {known} (or pass --site-file)")
        path = paths[name]
    data = _read_site_file(path)
    if site_file is None and data.get("name", name) != name:
        raise SiteConfigError(f"site file {path}: names site {data.get('name')!r}, but its file name says {name!r}")
    data.setdefault("name", name or path.stem)
    if site_file is not None and name and data["name"] != name:
        raise SiteConfigError(f"site file {path}: describes site {data['name']!r}, not {name!r}")

    data = copy.deepcopy(data)
    set_paths = set()
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, text)
        set_paths.add(".".join(keys))

    where = f"site {data['name']!r} ({path})"
    try:
        site = SiteRecord.model_validate(data)
    except ValidationError as err:
        raise SiteConfigError(_describe(err, data, where, set_paths)) from err
    site._source = str(path)
    return site
