"""Render a site record into a Globus Compute endpoint folder, and check it with Globus Compute.

An endpoint folder (``~/.globus_compute/NAME/``, Globus Compute endpoint 4.x) holds:

``config.yaml``
    the core endpoint config (no engine: Globus Compute loads it as a ``CoreEndpointConfig``);
``user_config_template.yaml.j2``
    the engine (``GlobusComputeEngine`` + a parsl provider), itself a Jinja template that
    the endpoint renders for each user with the options the user sends;
``user_config_schema.json``
    the JSON schema those options must satisfy (names, types, bounds);
``identity_mapping_config.json``
    only for a privileged (multi-user) endpoint with ``endpoint.identity_mapping`` rules:
    which local account each Globus identity runs as (``identity_mapping_config_path``).

Before rendering, the record is checked against the rules of its facility and of Globus
Compute's start-up (`faasctl.sites.lint`).

The templates live in ``endpoint_templates/`` (one folder per provider family). faasctl
renders them with its own delimiters (``[[ ]]``, ``[% %]``) so the endpoint's ``{{ }}`` pass
survives untouched. `validate_endpoint` then does what the endpoint does at start-up:
it renders the user template with Globus Compute's own ``render_config_user_template`` and
loads the result with ``load_config_yaml``, which builds the real engine and provider.

Example:
    >>> from faasctl.sites import load_site
    >>> files = render_endpoint(load_site("river"))
    >>> sorted(files)
    ['config.yaml', 'user_config_schema.json', 'user_config_template.yaml.j2']
    >>> validate_endpoint(files)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import socket
import tempfile
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from faasctl.images.containers import worker_container_options
from faasctl.study import WORKER_ENV
from faasctl.exceptions import MissingExtra, RenderError
from faasctl.files import atomic_write
from faasctl.sites.model import IDENTITY_MAPPING_FILE

if TYPE_CHECKING:
    from parsl.providers.base import ExecutionProvider

    from faasctl.sites import SiteRecord

__all__ = [
    "EndpointFiles",
    "ENDPOINT_FILES",
    "GPU_WORKER_ENV",
    "IDENTITY_MAPPING",
    "endpoint_templates_dir",
    "render_endpoint",
    "validate_endpoint",
    "write_endpoint",
    "load_endpoint_config",
    "parsl_provider",
]

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
USER_TEMPLATE = "user_config_template.yaml.j2"
USER_SCHEMA = "user_config_schema.json"
#: What workers of a GPU site (``engine.available_accelerators``) run with, as images/cuda/Dockerfile sets it:
#: JAX would take 75% of a GPU's memory per process at its first use; on demand, workers can share a device.
GPU_WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
#: The files of an endpoint folder, in the order they are written.
ENDPOINT_FILES = (CONFIG, USER_TEMPLATE, USER_SCHEMA)
#: Written as well when the site lists identity mapping rules (privileged endpoints).
IDENTITY_MAPPING = IDENTITY_MAPPING_FILE
#: Where a privileged endpoint's folder is, unless told: root's Globus Compute folder.
PRIVILEGED_USER_DIR = Path("/root/.globus_compute")

_SITE_HEADER = re.compile(r"^# faasctl-site: (\S+)$", re.MULTILINE)
_PASS2_MARKERS = ("{{", "{%", "{#")
# Bound of a user's max_workers_per_node when the site leaves it at one worker per core.
_MAX_WORKERS_PER_NODE = 1024


class EndpointFiles(dict[str, str]):
    """File name -> text of an endpoint folder; remembers the site it was rendered from."""

    site: SiteRecord | None = None


def endpoint_templates_dir() -> Path:
    """The ``endpoint_templates`` folder: in the wheel (``faasctl/endpoint_templates``), else the checkout."""
    packaged = Path(str(resources.files("faasctl"))) / "endpoint_templates"
    if packaged.is_dir():
        return packaged
    # editable install: src/faasctl/sites/render.py -> repository root
    return Path(__file__).resolve().parents[3] / "endpoint_templates"


# ---------------------------------------------------------------------------- pass 1


def _escape_pass2(text: str) -> str:
    """Keep the endpoint's Jinja pass from reading site values as template code."""
    if not any(marker in text for marker in _PASS2_MARKERS):
        return text
    if "endraw" in text:
        raise RenderError(f"a site value contains Jinja syntax and 'endraw', which cannot be escaped: {text!r}")
    return "{% raw %}" + text + "{% endraw %}"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (PyYAML falls back to quotes when it must)."""


_BlockDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None),
)


def _yaml_scalar(value: Any, indent: int = 0, pass2: bool = True) -> str:
    """One YAML value for ``key: <here>``: JSON-quoted, or a literal block for multi-line text.

    ``pass2=False`` for files the endpoint reads as plain YAML (config.yaml), which need no
    protection from its Jinja pass.
    """
    if isinstance(value, str) and "\n" in value:
        text = yaml.dump({"k": value}, Dumper=_BlockDumper, width=1 << 20, sort_keys=False)[3:].rstrip("\n")
        text = text.replace("\n", "\n" + " " * indent)
    else:
        text = json.dumps(value)
    return _escape_pass2(text) if pass2 else text


def _comment_text(value: Any) -> str:
    """Text inside a pass-2 Jinja comment, which must not close it early."""
    return str(value).replace("#}", "# }")


def _yaml_items(mapping: Mapping[str, Any], indent: int) -> str:
    """A mapping as block-YAML lines indented by ``indent`` (for the ``options`` pass-through)."""
    text = yaml.dump(dict(mapping), Dumper=_BlockDumper, width=1 << 20, sort_keys=True, default_flow_style=False)
    lines = [" " * indent + line for line in text.rstrip("\n").split("\n")]
    return _escape_pass2("\n".join(lines))


def _jinja_env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(endpoint_templates_dir())),
        undefined=jinja2.StrictUndefined,
        block_start_string="[%",
        block_end_string="%]",
        variable_start_string="[[",
        variable_end_string="]]",
        comment_start_string="[#",
        comment_end_string="#]",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(yaml=_yaml_scalar, yaml_items=_yaml_items, comment=_comment_text)
    return env


def _exports(env: Mapping[str, str]) -> str:
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


def _worker_init(site: SiteRecord) -> str:
    lines = [site.worker_init.rstrip("\n")] if site.worker_init.strip() else []
    lines += ["# faasctl: one thread per worker process (faasctl.study.WORKER_ENV)", _exports(WORKER_ENV)]
    if site.engine.available_accelerators is not None:
        lines += ["# faasctl: GPU memory on demand, as the CUDA image sets it (GPU_WORKER_ENV)", _exports(GPU_WORKER_ENV)]
    return "\n".join(lines) + "\n"


def _container_uri(site: SiteRecord) -> str | None:
    image = site.image
    if not image or site.container is None:
        return image
    if site.container.type in ("apptainer", "singularity"):
        looks_local = image.startswith(("/", "./", "~")) or image.endswith(".sif")
        if "://" not in image and not looks_local:
            return f"docker://{image}"
    return image


def _user_limits(site: SiteRecord) -> dict[str, Any]:
    provider = site.provider
    workers = site.engine.max_workers_per_node
    return {
        "max_blocks_min": max(1, provider.init_blocks, provider.min_blocks),
        "walltime_minutes": provider.walltime_minutes() if hasattr(provider, "walltime_minutes") else None,
        "workers_default": workers,
        "workers_max": workers or _MAX_WORKERS_PER_NODE,
    }


def identity_mapping_path(site: SiteRecord, endpoint_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Where ``config.yaml`` says the identity mapping file is.

    ``endpoint.identity_mapping_config_path`` when set; else, for a site with identity
    mapping rules, ``identity_mapping_config.json`` in ``endpoint_dir`` (default: root's
    ``/root/.globus_compute/NAME``, where a privileged endpoint lives); else None.
    """
    if site.endpoint.identity_mapping_config_path is not None:
        return site.endpoint.identity_mapping_config_path
    if not site.endpoint.identity_mapping:
        return None
    folder = Path(endpoint_dir).expanduser().absolute() if endpoint_dir is not None else PRIVILEGED_USER_DIR / site.name
    return str(folder / IDENTITY_MAPPING)


def render_endpoint(site: SiteRecord, *, endpoint_dir: str | os.PathLike[str] | None = None, lint: bool = True) -> EndpointFiles:
    """Render the endpoint folder of ``site``: file name -> text.

    Nothing is checked against Globus Compute here; call `validate_endpoint` (or
    `write_endpoint`, which does) before using the files.

    Args:
        site: the site record.
        endpoint_dir: where the folder will be installed; only the identity mapping file's
            path in ``config.yaml`` depends on it (see `identity_mapping_path`).
        lint: check the record against its facility's rules first (`faasctl.sites.lint`).

    Raises:
        SiteConfigError: the record breaks a facility or Globus Compute rule (``lint``).
        RenderError: a template is missing or fails, or the schema it renders is not valid JSON.
    """
    import jinja2
    import jsonschema

    if lint:
        from faasctl.sites.lint import check_site

        check_site(site)
    env = _jinja_env()
    context = {
        "container_options": worker_container_options(site.container.type, site.container.options) if site.container else "",
        "site": site,
        "limits": _user_limits(site),
        "worker_init": _worker_init(site),
        "container_uri": _container_uri(site),
        "identity_mapping_path": identity_mapping_path(site, endpoint_dir),
    }
    files = EndpointFiles()
    for name, template in (
        (CONFIG, "config.yaml.j2"),
        (USER_TEMPLATE, f"{site.family}/user_config_template.yaml.j2"),
        (USER_SCHEMA, f"{site.family}/user_config_schema.json.j2"),
    ):
        try:
            text = env.get_template(template).render(context)
        except jinja2.TemplateError as err:
            raise RenderError(f"site {site.name!r}: endpoint template {template} failed: {err}") from err
        # the templates stay readable with blank lines around their tags; the output has none
        files[name] = "\n".join(line.rstrip() for line in text.splitlines() if line.strip()) + "\n"

    try:
        schema = json.loads(files[USER_SCHEMA])
        jsonschema.Draft202012Validator.check_schema(schema)
    except (ValueError, jsonschema.SchemaError) as err:
        raise RenderError(f"site {site.name!r}: rendered {USER_SCHEMA} is not a valid JSON schema: {err}") from err
    files[USER_SCHEMA] = json.dumps(schema, indent=2) + "\n"
    if site.endpoint.identity_mapping:
        files[IDENTITY_MAPPING] = json.dumps(site.endpoint.identity_mapping, indent=2) + "\n"
    files.site = site
    return files


# ---------------------------------------------------------------------------- pass 2 + loader


@contextlib.contextmanager
def _dummy_kubeconfig() -> Iterator[None]:
    """Point the kubeconfig at a throw-away file while Globus Compute builds a KubernetesProvider.

    The provider reads a kubeconfig in its constructor (it contacts no server). Validation
    always uses this dummy, so it depends neither on the admin's current context nor runs
    its auth plugins. The kubernetes package reads KUBECONFIG once, at import, so its
    module default is switched too; KUBECONFIG, that default and the kubernetes client
    defaults are all restored afterwards, and the file is deleted.
    """
    try:
        from kubernetes.client import Configuration
        from kubernetes.config import kube_config
    except ImportError as err:
        raise MissingExtra("kubernetes", "k8s") from err

    dummy = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "faasctl-validate", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "faasctl-validate", "user": {}}],
        "contexts": [{"name": "faasctl-validate", "context": {"cluster": "faasctl-validate", "user": "faasctl-validate"}}],
        "current-context": "faasctl-validate",
    }
    saved_env = os.environ.get("KUBECONFIG")
    saved_location = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    saved_default = getattr(Configuration, "_default", None)  # load_kube_config() replaces it
    with tempfile.TemporaryDirectory(prefix="faasctl-kube-") as tmp:
        path = Path(tmp) / "config"
        path.write_text(yaml.safe_dump(dummy))
        os.environ["KUBECONFIG"] = kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
        try:
            yield
        finally:
            if saved_env is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = saved_env
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_location
            Configuration.set_default(saved_default)


def _site_name(files: Mapping[str, str], site: SiteRecord | None) -> str:
    if site is not None:
        return site.name
    match = _SITE_HEADER.search(files.get(CONFIG, ""))
    return match.group(1) if match else "?"


def _blame(message: str, site: SiteRecord | None, engine: Mapping[str, Any]) -> tuple[str, Any]:
    """The site field (dotted path) and value behind a Globus Compute loader error."""
    provider = engine.get("provider") or {}
    if incompatible := re.search(r"The '(\w+)' field is not compatible", message):
        key = incompatible.group(1)
        return f"engine.{key}", engine.get(key)
    match = re.search(r"keyword argument '(\w+)'|argument \"(\w+)\"|'(\w+)' is not a valid (provider|launcher|engine|address)", message)
    if not match:
        return "", None
    if match.group(3):  # unknown class name
        kind = match.group(4)
        where = {"provider": "provider.type", "launcher": "provider.launcher.type", "engine": "engine.type"}.get(kind, "engine.address")
        return where, match.group(3)
    key = match.group(1) or match.group(2)
    launcher = provider.get("launcher") or {}
    places: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [
        ("provider", provider, site.provider.options if site else {}),
        ("provider.launcher", launcher, {}),
        ("engine", engine, site.engine.options if site else {}),
    ]
    if "Launcher" in message.split("argument", 1)[0]:  # e.g. "SrunLauncher.__init__() got an unexpected ..."
        places.insert(0, places.pop(1))
    for prefix, rendered, options in places:
        if key in rendered:
            return (f"{prefix}.options.{key}" if key in options else f"{prefix}.{key}"), rendered[key]
    return key, None


def _without_missing_interface(engine: dict[str, Any]) -> dict[str, Any]:
    """Swap an interface this host lacks (ib0 on a laptop) for loopback, for loading only.

    The interface is looked up on the endpoint host when the endpoint starts; here its
    name is all that can be checked.
    """
    address = engine.get("address")
    if not (isinstance(address, dict) and address.get("type") == "address_by_interface"):
        return engine
    present = {name for _, name in socket.if_nameindex()}
    if address.get("ifname") in present:
        return engine
    log.info("interface %r is not on this host; loading with 127.0.0.1 (it is resolved on the endpoint host)", address.get("ifname"))
    return {**engine, "address": "127.0.0.1"}


def _with_local_mapping(files: Mapping[str, str], folder: Path) -> dict[str, str]:
    """The folder's files with config.yaml pointing at ``folder``'s identity mapping file.

    config.yaml names the file where the endpoint will be installed (often root's folder);
    the check reads the copy rendered alongside instead.
    """
    out = dict(files)
    if IDENTITY_MAPPING in files:
        pattern = re.compile(r"^identity_mapping_config_path: .*$", re.MULTILINE)
        local = f"identity_mapping_config_path: {json.dumps(str(folder / IDENTITY_MAPPING))}"
        out[CONFIG] = pattern.sub(lambda _: local, files[CONFIG], count=1)
    return out


def _check_identity_mapping(path: Path, name: str) -> None:
    """Load the identity mapping file as the endpoint does (``PosixIdentityMapper.load_configuration``)."""
    from globus_compute_endpoint.endpoint.identity_mapper import POSIX_CONNECTOR_ID
    from globus_identity_mapping.loader import load_mappers

    try:
        mappers = load_mappers(json.loads(path.read_text()), POSIX_CONNECTOR_ID, "faasctl-validate")
    except Exception as err:  # the loader raises ValueError, KeyError, TypeError, ...
        message = " ".join(str(err).split()) or type(err).__name__
        raise RenderError(f"site {name!r}: endpoint.identity_mapping is refused by Globus Compute: {message}") from err
    if not mappers:
        raise RenderError(f"site {name!r}: endpoint.identity_mapping holds no rule Globus Compute can use")


def _render_user_config(files: Mapping[str, str], user_values: Mapping[str, Any] | None, name: str, folder: Path) -> str:
    """Render the user template exactly as the endpoint does, from files in ``folder``."""
    import pwd
    import uuid

    import jinja2
    from globus_compute_endpoint.endpoint.config.config import CoreEndpointConfig
    from globus_compute_endpoint.endpoint.config.utils import (
        get_config,
        load_user_config_schema,
        load_user_config_template,
        render_config_user_template,
    )
    from globus_compute_endpoint.endpoint.identity_mapper import MappedPosixIdentity

    write_endpoint(_with_local_mapping(files, folder), folder, validate=False)
    if IDENTITY_MAPPING in files:
        _check_identity_mapping(folder / IDENTITY_MAPPING, name)
    try:
        parent = get_config(folder)
    except Exception as err:
        message = " ".join(str(getattr(err, "message", err)).split())
        if "Identity mapping config path" in message:  # checked where the file is loaded: render on the endpoint host
            message = f"endpoint.identity_mapping_config_path: {message} (render on the endpoint host, where the file exists)"
        raise RenderError(f"site {name!r}: {CONFIG} is refused by Globus Compute: {message}") from err
    if not isinstance(parent, CoreEndpointConfig):
        raise RenderError(f"site {name!r}: {CONFIG} must not hold an engine (the engine is in {USER_TEMPLATE})")
    template_path = folder / USER_TEMPLATE
    identity = MappedPosixIdentity(
        local_user_record=pwd.getpwuid(os.getuid()),
        matched_identity=uuid.UUID(int=0),
        globus_identity_candidates=[],
    )
    schema = load_user_config_schema(folder / USER_SCHEMA)
    if user_values is None:
        user_values = _sample_required_values(schema)
    _check_user_values(user_values, schema, name)
    try:
        return render_config_user_template(
            parent_config=parent,
            user_config_template=load_user_config_template(template_path),
            user_config_template_path=template_path,
            mapped_identity=identity,
            user_config_schema=schema,
            user_opts=dict(user_values or {}),
        )
    except (jinja2.TemplateError, ValueError) as err:
        raise RenderError(f"site {name!r}: {USER_TEMPLATE} does not render: {err}") from err


def _sample_required_values(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Stand-ins for the options a user must send (e.g. ``account``), to check a folder without a user.

    Only the options the schema marks ``required`` are given: a default or the first choice
    when the schema has one, else a placeholder of the right type.
    """
    values: dict[str, Any] = {}
    properties = (schema or {}).get("properties", {})
    for key in (schema or {}).get("required", []):
        prop = properties.get(key, {})
        if "default" in prop:
            values[key] = prop["default"]
        elif prop.get("enum"):
            values[key] = prop["enum"][0]
        elif prop.get("type") == "integer":
            values[key] = prop.get("minimum", 1)
        else:
            values[key] = "ALLOCATION" if key == "account" else "value"
    return values


def _check_user_values(values: Mapping[str, Any], schema: dict[str, Any] | None, name: str) -> None:
    """Check user options against the folder's schema first, to name the option in the error.

    (Globus Compute checks them again while rendering; by then they are known to pass.)
    """
    import jsonschema

    if not schema:
        return
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(dict(values)))
    if error is None:
        return
    field = ".".join(str(p) for p in error.absolute_path)
    value = error.instance
    if not field and error.validator == "additionalProperties":
        unknown = sorted(set(values) - set(schema.get("properties", {})))
        field, value = ", ".join(unknown), [values[k] for k in unknown]
        value = value[0] if len(value) == 1 else value
        allowed = ", ".join(schema.get("properties", {}))
        raise RenderError(f"site {name!r}: user option {field} = {value!r} is not one this endpoint accepts (allowed: {allowed})")
    raise RenderError(f"site {name!r}: user option {field or '(options)'} = {value!r} refused by {USER_SCHEMA}: {error.message}")


def load_endpoint_config(
    files: Mapping[str, str],
    user_values: Mapping[str, Any] | None = None,
    *,
    site: SiteRecord | None = None,
    kubeconfig: str = "dummy",
) -> Any:
    """Render the user template and load it with Globus Compute's loader, as the endpoint would.

    Args:
        files: an endpoint folder as from `render_endpoint`.
        user_values: the options a user sends (checked against the folder's schema); None:
            the site's defaults, and a placeholder for each option the schema requires.
        site: the site the files came from, to name fields in errors (default: ``files.site``).
        kubeconfig: "dummy" to load a KubernetesProvider with a throw-away kubeconfig, or
            "environment" to use the real one (for a provider that will be used).

    Returns:
        The ``UserEndpointConfig`` whose ``.engine`` is a ``GlobusComputeEngine`` that has
        not been started; call ``.engine.shutdown()`` when done with it.

    Raises:
        RenderError: the folder is refused; the message names the site, field and value.
        MissingExtra: a KubernetesProvider without the ``kubernetes`` package.
    """
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

    site = site if site is not None else getattr(files, "site", None)
    name = _site_name(files, site)
    missing = [f for f in ENDPOINT_FILES if f not in files]
    if missing:
        raise RenderError(f"site {name!r}: endpoint folder lacks {', '.join(missing)}")

    with tempfile.TemporaryDirectory(prefix="faasctl-endpoint-") as tmp:
        rendered = _render_user_config(files, user_values, name, Path(tmp))
    try:
        data = yaml.safe_load(rendered)
    except yaml.YAMLError as err:
        raise RenderError(f"site {name!r}: rendered {USER_TEMPLATE} is not valid YAML: {err}") from err
    engine = data.get("engine") if isinstance(data, dict) else None
    if not isinstance(engine, dict):
        raise RenderError(f"site {name!r}: rendered {USER_TEMPLATE} has no engine mapping")
    loadable = _without_missing_interface(engine)
    if loadable is not engine:  # otherwise load the rendered text itself
        rendered = yaml.safe_dump({**data, "engine": loadable}, sort_keys=False)

    kube = engine.get("provider", {}).get("type") == "KubernetesProvider" and kubeconfig == "dummy"
    with _dummy_kubeconfig() if kube else contextlib.nullcontext():
        try:
            return load_config_yaml(rendered)
        except Exception as err:  # ClickException wrapping the engine/provider constructor's error
            message = " ".join(str(getattr(err, "message", err)).split())
            if "kubernetes" in message.lower() and "OptionalModuleMissing" in repr(err.__cause__):
                raise MissingExtra("kubernetes", "k8s") from err
            field, value = _blame(message, site, engine)
            what = f"{field} = {value!r} refused" if field else f"{engine.get('provider', {}).get('type', 'engine')} refused"
            raise RenderError(f"site {name!r}: {what} by Globus Compute's loader: {message}") from err


def validate_endpoint(
    files: Mapping[str, str], user_values: Mapping[str, Any] | None = None, *, site: SiteRecord | None = None
) -> None:
    """Check an endpoint folder the way the endpoint will read it.

    Loads ``config.yaml`` as the core config, renders the user template with Globus
    Compute's ``render_config_user_template`` (options checked against the schema) and
    loads the result with ``load_config_yaml``, which builds the real engine and parsl
    provider (never started). Nothing is left behind.

    Args:
        files: an endpoint folder as from `render_endpoint`.
        user_values: options a user would send (default: the site's defaults, and a
            placeholder for each option the schema requires, such as ``account``).
        site: the site the files came from (default: ``files.site``), to name fields in errors.

    Raises:
        RenderError: naming the site, the field and its value.
    """
    config = load_endpoint_config(files, user_values, site=site)
    config.engine.shutdown()


def write_endpoint(files: Mapping[str, str], out_dir: str | os.PathLike[str], *, validate: bool = True) -> list[Path]:
    """Write an endpoint folder (e.g. ``~/.globus_compute/NAME``), after validating it.

    Each file is replaced atomically; the folder is created (mode 0700) if needed; other
    files there (e.g. the endpoint's ``endpoint.json``) are left alone.

    Args:
        files: file name -> text, as from `render_endpoint`.
        out_dir: the endpoint folder.
        validate: run `validate_endpoint` first, so nothing is written if it fails.

    Returns:
        The paths written.

    Raises:
        RenderError: the files are refused, or the folder holds a ``config.py`` (which
            Globus Compute would read instead).
    """
    out = Path(out_dir).expanduser()
    if (out / "config.py").exists():
        raise RenderError(f"{out / 'config.py'} exists, and Globus Compute reads it instead of config.yaml: move it away first")
    if validate:
        validate_endpoint(files)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        if "/" in name or name.startswith("."):
            raise RenderError(f"refusing to write {name!r}: not a plain file name")
        path = out / name
        atomic_write(path, lambda fh, text=text: fh.write(text), mode=0o600)
        written.append(path)
    log.info("wrote endpoint folder %s (%s)", out, ", ".join(files))
    return written


def parsl_provider(site: SiteRecord, user_values: Mapping[str, Any] | None = None) -> ExecutionProvider:
    """The parsl provider Globus Compute builds from ``site``'s rendered endpoint config.

    For direct mode (parsl on the site's own provider, no Globus cloud): the same
    ``SlurmProvider`` / ``PBSProProvider`` / ... object, with the same blocks, launcher and
    worker_init, that the endpoint would use. A KubernetesProvider reads the real kubeconfig.

    Example:
        >>> from faasctl.sites import load_site
        >>> provider = parsl_provider(load_site("river"))
        >>> type(provider).__name__, provider.max_blocks
        ('SlurmProvider', 4)

    Raises:
        RenderError: as `validate_endpoint`.
    """
    # no stand-ins here: a site that requires an account needs a real one (site or user value)
    config = load_endpoint_config(render_endpoint(site), dict(user_values or {}), site=site, kubeconfig="environment")
    provider = config.engine.executor.provider
    config.engine.shutdown()
    return provider
