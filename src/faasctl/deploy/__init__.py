"""Deploy a site's Globus Compute endpoint, or fit on the site directly.

One deployer per way of running an endpoint, chosen by the site's provider:

========================  =====================  ==========================================
provider                  deployer               what ``deploy`` does
========================  =====================  ==========================================
KubernetesProvider        `HelmDeployer`         ``helm upgrade --install`` of the chart
SlurmProvider             `BatchDeployer`        install ``~/.globus_compute/NAME``, start it
PBSProProvider            `BatchDeployer`        (same: an endpoint on the login node)
LocalProvider             `BatchDeployer`        (same: an endpoint on this host)
========================  =====================  ==========================================

Direct mode (`faasctl.executors.site.site_executor`) needs no endpoint at all.

Example:
    >>> from faasctl.sites import load_site
    >>> deployer = deployer_for(load_site("river"))
    >>> [type(a).__name__ for a in deployer.plan()]  # doctest: +SKIP
    ['Who', 'WriteFiles', 'Notice']
"""

from __future__ import annotations

from typing import Any

from faasctl.deploy.base import Action, Deployer, DeployStatus, Notice, RemovePath, RunCommand, Who, WriteFiles
from faasctl.exceptions import DeployError

__all__ = [
    "Action",
    "Deployer",
    "DeployStatus",
    "Notice",
    "RemovePath",
    "RunCommand",
    "Who",
    "WriteFiles",
    "DEPLOYERS",
    "deployer_for",
]

#: provider type -> deployer kind
DEPLOYERS = {
    "KubernetesProvider": "helm",
    "SlurmProvider": "batch",
    "PBSProProvider": "batch",
    "LocalProvider": "batch",
}


def deployer_for(site: Any, **options: Any) -> Deployer:
    """The deployer for ``site``'s provider.

    Args:
        site: the site record.
        **options: passed to the deployer (`HelmDeployer` or `BatchDeployer`).

    Raises:
        DeployError: no deployer handles the site's provider.
    """
    kind = DEPLOYERS.get(site.provider.type)
    if kind == "helm":
        from faasctl.deploy.helm import HelmDeployer

        return HelmDeployer(site, **options)
    if kind == "batch":
        from faasctl.deploy.batch import BatchDeployer

        return BatchDeployer(site, **options)
    raise DeployError(
        f"site {site.name!r}: no deployer for provider.type {site.provider.type!r}; "
        f"faasctl deploys {', '.join(DEPLOYERS)}"
    )
