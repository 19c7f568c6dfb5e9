"""Kubernetes sites: the endpoint as a Helm release of ``helm/faasctl-endpoint``.

The chart holds no endpoint config of its own: `HelmDeployer` puts the files ``faasctl render``
makes for the site into a values file (``endpointConfig.*``), checks the merged values against
the chart's ``values.schema.json`` with jsonschema, and runs::

    helm upgrade --install SITE CHART --namespace NS --create-namespace --values VALUES

The namespace is the KubernetesProvider's (``provider.namespace``), so the endpoint pod, its
Role and the worker pods it creates share one namespace. Credentials are never values: the
pod reads them from an existing Secret (default name ``<site>-globus-compute``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from faasctl.deploy.base import Action, Deployer, DeployStatus, RemovePath, RunCommand, Who, WriteFiles
from faasctl.exceptions import DeployError

__all__ = ["HelmDeployer", "chart_dir", "helm_binary", "chart_values", "validate_values"]

log = logging.getLogger(__name__)

CHART_NAME = "faasctl-endpoint"
#: helm release names: DNS-1123 labels, at most 53 characters (helm's own limit)
_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def chart_dir() -> Path:
    """The chart: in the wheel (``faasctl/helm/faasctl-endpoint``), else the checkout's ``helm/``."""
    packaged = Path(__file__).resolve().parents[1] / "helm" / CHART_NAME
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "helm" / CHART_NAME


def helm_binary() -> str:
    """``helm`` on PATH, else the one ``.ci/helm-get.sh`` puts in the checkout's ``.tools/bin``."""
    if shutil.which("helm"):
        return "helm"
    local = Path(__file__).resolve().parents[3] / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else "helm"


class _ValuesDumper(yaml.SafeDumper):
    """Multi-line strings (the endpoint files) as literal blocks, so the values file reads like them."""


_ValuesDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None),
)


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "faasctl" / "helm"


def _split_image(image: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a digest (``@sha256:...``) stays in the repository."""
    if "@" in image:
        return image, ""
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, ""


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge as helm merges values files: mappings recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_values(site: Any, files: Mapping[str, str], *, secret: str | None = None) -> dict[str, Any]:
    """The values faasctl passes to the chart for ``site``: endpoint name and image, the
    rendered endpoint folder, the credentials Secret's name."""
    from faasctl.sites.render import CONFIG, USER_SCHEMA, USER_TEMPLATE

    repository, tag = _split_image(site.image)
    return {
        "endpoint": {
            "name": site.name,
            "image": {"repository": repository, "tag": tag},
            "credentials": {"secretName": secret or f"{site.name}-globus-compute"},
        },
        "endpointConfig": {
            "configYaml": files[CONFIG],
            "userConfigTemplate": files[USER_TEMPLATE],
            "userConfigSchema": files.get(USER_SCHEMA, ""),
        },
    }


def validate_values(values: Mapping[str, Any], chart: Path | None = None) -> dict[str, Any]:
    """Merge ``values`` over the chart's ``values.yaml`` and check them against its
    ``values.schema.json``, as ``helm install`` would; returns the merged values.

    Raises:
        DeployError: naming the value (dotted path) and what is wrong with it.
    """
    import jsonschema

    chart = chart or chart_dir()
    try:
        defaults = yaml.safe_load((chart / "values.yaml").read_text()) or {}
        schema = json.loads((chart / "values.schema.json").read_text())
    except (OSError, ValueError) as err:
        raise DeployError(f"chart {chart}: cannot read values.yaml / values.schema.json: {err}") from err
    merged = _merge(defaults, values)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '(values)'}: {e.message}" for e in errors[:5]]
        raise DeployError(f"chart {chart.name}: values refused by values.schema.json: " + "; ".join(lines))
    return merged


class HelmDeployer(Deployer):
    """The endpoint of a Kubernetes site as a Helm release.

    Args:
        site: the site record (a KubernetesProvider site).
        files: the rendered endpoint folder (default: rendered from ``site``).
        values: more chart values, merged over faasctl's (e.g. ``{"endpoint": {"credentials":
            {"secretName": "gc-creds"}}}``); checked against the chart's schema like the rest.
        chart: the chart folder (default: `chart_dir`).
        state_dir: where the values file is kept (default ``$XDG_STATE_HOME/faasctl/helm/<site>``).
        helm: the helm command (default: `helm_binary`).
        kube_context: a kubeconfig context for helm (default: the current one).
    """

    kind = "helm"

    def __init__(
        self,
        site: Any,
        *,
        files: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        chart: Path | None = None,
        state_dir: Path | None = None,
        helm: str | None = None,
        kube_context: str | None = None,
    ) -> None:
        super().__init__(site, files=files)
        if site.provider.type != "KubernetesProvider":
            raise DeployError(f"site {site.name!r}: helm deploys KubernetesProvider sites, not {site.provider.type}")
        if not _RELEASE.match(site.name) or len(site.name) > 53:
            raise DeployError(
                f"site {site.name!r}: not usable as a helm release name (lowercase letters, digits and '-', "
                "at most 53 characters)"
            )
        self.extra_values = dict(values or {})
        self.chart = Path(chart) if chart is not None else chart_dir()
        self.state_dir = Path(state_dir) if state_dir is not None else _state_dir() / site.name
        self.helm = helm or helm_binary()
        self.kube_context = kube_context

    @property
    def release(self) -> str:
        return self.site.name

    @property
    def namespace(self) -> str:
        """The worker pods' namespace (provider.namespace), where the release goes too."""
        return str(self.site.provider.namespace)

    @property
    def values_path(self) -> Path:
        return self.state_dir / "values.yaml"

    def values(self) -> dict[str, Any]:
        """faasctl's values merged with the extra ones (not yet with the chart's defaults)."""
        return _merge(chart_values(self.site, self.files), self.extra_values)

    def values_yaml(self) -> str:
        """The values file passed to helm, after checking it against the chart's schema."""
        values = self.values()
        validate_values(values, self.chart)
        header = (
            f"# helm values for site {self.site.name!r}, written by faasctl deploy from the site record\n"
            f"# ({self.site.source or 'built in code'}); endpointConfig is `faasctl render --site {self.site.name}`.\n"
        )
        return header + yaml.dump(values, Dumper=_ValuesDumper, sort_keys=False, width=1 << 20, allow_unicode=True)

    def _base(self, *args: str) -> list[str]:
        argv = [self.helm, *args]
        if self.kube_context:
            argv += ["--kube-context", self.kube_context]
        return argv

    def who(self) -> str:
        """Which accounts the release runs as, from the merged values and the site's worker pods."""
        values = validate_values(self.values(), self.chart)
        endpoint = values["endpoint"]
        uid = (endpoint.get("podSecurityContext") or {}).get("runAsUser", "the image's user")
        account = values["serviceAccount"].get("name") or f"{self.release}-{CHART_NAME}"
        provider = self.site.provider
        workers = f"uid {provider.user_id}" if provider.user_id is not None else "the worker image's user"
        return (
            f"single-user endpoint pod (uid {uid}, service account {account}) in namespace {self.namespace}, "
            f"authenticated by the client credentials in Secret {endpoint['credentials']['secretName']}: it accepts "
            f"tasks of that Globus identity only; the worker pods run as {workers}, created by that service account"
        )

    def plan(self) -> list[Action]:
        """Say who runs what, write the checked values file, then ``helm upgrade --install``."""
        return [
            Who(self.who()),
            WriteFiles(self.state_dir, {"values.yaml": self.values_yaml()}),
            RunCommand(self._base(
                "upgrade", "--install", self.release, str(self.chart),
                "--namespace", self.namespace, "--create-namespace",
                "--values", str(self.values_path),
            )),
        ]

    def teardown_plan(self) -> list[Action]:
        """``helm uninstall``, then remove the values file."""
        return [
            RunCommand(self._base("uninstall", self.release, "--namespace", self.namespace)),
            RemovePath(self.state_dir),
        ]

    def status_command(self) -> RunCommand:
        return RunCommand(self._base("status", self.release, "--namespace", self.namespace, "--output", "json"), timeout=60)

    def status(self) -> DeployStatus:
        """``helm status``: the release's state (``deployed``, ``failed``, ...) and revision."""
        details: dict[str, Any] = {"release": self.release, "namespace": self.namespace, "chart": str(self.chart)}
        try:
            done = self.status_command().run()
        except DeployError as err:
            if "not found" in str(err):
                return DeployStatus(self.name, self.kind, "not-installed", details)
            raise
        try:
            info = json.loads(done.stdout)
        except ValueError as err:
            raise DeployError(f"{self.status_command().describe()}: unreadable output: {err}") from err
        details.update(
            revision=info.get("version"),
            updated=(info.get("info") or {}).get("last_deployed"),
            description=(info.get("info") or {}).get("description"),
        )
        state = (info.get("info") or {}).get("status") or "unknown"
        return DeployStatus(self.name, self.kind, state, details)

