"""Endpoints on this host: batch sites (Slurm, PBS Pro) from their login node, and local sites.

The endpoint is Globus Compute's own: faasctl installs the folder `faasctl render` makes into
``$GLOBUS_COMPUTE_USER_DIR/NAME`` (default ``~/.globus_compute/NAME``) and starts it with
``globus-compute-endpoint start NAME --detach``; the endpoint then submits its worker blocks
through the site's provider (``sbatch`` / ``qsub``, or local processes). Starting needs Globus
credentials (``GLOBUS_COMPUTE_CLIENT_ID``/``SECRET`` or a ``globus-compute-endpoint login``);
without them the plan ends with the command to run once logged in.

A single-user endpoint runs as whoever deploys it and takes only that Globus identity's tasks.
A privileged one (``endpoint.privileged``) must be started by root: it maps each submitting
identity to a local account and runs that account's user endpoint and jobs as that account.
Every plan opens with a `Who` line saying which.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

from faasctl.deploy.base import Action, Deployer, DeployStatus, Notice, RemovePath, RunCommand, Who, WriteFiles

__all__ = ["BatchDeployer", "compute_dir", "endpoint_cli", "has_credentials", "who_runs_what"]

log = logging.getLogger(__name__)

#: Environment variables of a Globus confidential client (service identity).
CREDENTIAL_ENV = ("GLOBUS_COMPUTE_CLIENT_ID", "GLOBUS_COMPUTE_CLIENT_SECRET")


def compute_dir() -> Path:
    """Globus Compute's folder: ``$GLOBUS_COMPUTE_USER_DIR``, or ``~/.globus_compute``."""
    from globus_compute_sdk.sdk.compute_dir import get_compute_dir

    return Path(get_compute_dir())


def has_credentials() -> bool:
    """Whether ``globus-compute-endpoint start`` can authenticate without asking: client
    credentials in the environment, or tokens stored by ``globus-compute-endpoint login``."""
    if all(os.environ.get(name) for name in CREDENTIAL_ENV):
        return True
    return (compute_dir() / "storage.db").is_file()


def endpoint_cli() -> str:
    """The ``globus-compute-endpoint`` command: the one on PATH, else the one beside this Python."""
    if shutil.which("globus-compute-endpoint"):
        return "globus-compute-endpoint"
    beside = Path(sys.executable).parent / "globus-compute-endpoint"
    return str(beside) if beside.exists() else "globus-compute-endpoint"


def _is_root() -> bool:
    return os.geteuid() == 0


def _mapping_summary(site: Any) -> str:
    """The identity mapping rules in a few words: ``{username} ~ (.*)@uchicago\\.edu -> {0}``."""
    rules = []
    for entry in site.endpoint.identity_mapping:
        if entry.get("DATA_TYPE", "").startswith("expression_identity_mapping"):
            rules += [f"{m.get('source')} ~ {m.get('match')} -> {m.get('output')}" for m in entry.get("mappings", [])]
        elif entry.get("DATA_TYPE", "").startswith("external_identity_mapping"):
            rules.append(f"the output of {' '.join(entry.get('command', []))}")
    return "; ".join(rules) or "the rules in that file"


def who_runs_what(site: Any, endpoint_dir: Path, user: str | None = None) -> str:
    """One paragraph: which account runs the endpoint, whose tasks it takes, who runs the workers."""
    provider = site.provider
    jobs = {"SlurmProvider": "Slurm jobs (sbatch)", "PBSProProvider": "PBS jobs (qsub)"}.get(provider.type, "processes on this host")
    account = getattr(provider, "account", None)
    if not hasattr(provider, "account"):
        charged = ""
    elif account:
        charged = f", charged to {account} unless the user sends another 'account'"
    elif getattr(provider, "account_required", False):
        charged = ", charged to the 'account' each user must send"
    else:
        charged = ", charged to the 'account' the user sends, else that user's default"
    if site.endpoint.privileged:
        from faasctl.sites.render import identity_mapping_path

        mapping = identity_mapping_path(site, endpoint_dir) or "(no identity mapping)"
        return (
            "privileged multi-user endpoint: the endpoint manager runs as root; each Globus identity that sends "
            f"tasks is mapped to a local account by {mapping} ({_mapping_summary(site)}); that account runs its "
            f"own user endpoint and the workers, as {jobs}{charged}; identities that map to no account are refused"
        )
    user = user or getpass.getuser()
    return (
        f"single-user endpoint: runs as {user} and accepts tasks only from the Globus identity that starts it; "
        f"the workers run as {user}, as {jobs}{charged}"
    )


class BatchDeployer(Deployer):
    """A Globus Compute endpoint on this host for a batch (Slurm, PBS Pro) or local site.

    For batch sites this host is the login node, from which the endpoint submits its worker
    jobs; for local sites the workers are processes here.

    Args:
        site: the site record.
        files: the rendered endpoint folder (default: rendered from ``site``).
        user_dir: Globus Compute's folder (default: `compute_dir`).
    """

    kind = "batch"

    def __init__(self, site: Any, *, files: Mapping[str, str] | None = None, user_dir: Path | None = None) -> None:
        super().__init__(site, files=files)
        self.user_dir = Path(user_dir) if user_dir is not None else compute_dir()

    @property
    def endpoint_dir(self) -> Path:
        return self.user_dir / self.name

    def render_options(self) -> dict[str, Any]:
        # config.yaml names the identity mapping file where it will be installed
        return {"endpoint_dir": self.endpoint_dir}

    def _env(self) -> dict[str, str]:
        # An explicit user_dir must reach globus-compute-endpoint too.
        return {"GLOBUS_COMPUTE_USER_DIR": str(self.user_dir)} if self.user_dir != compute_dir() else {}

    def _running(self) -> bool:
        from globus_compute_endpoint.endpoint.endpoint import Endpoint

        return bool(Endpoint.check_pidfile(self.endpoint_dir)["active"])

    def plan(self) -> list[Action]:
        """Say who runs what, install the endpoint folder, then (re)start the endpoint, or say how to.

        Only the rendered files are written: ``endpoint.json`` (the endpoint's id) and logs
        of an earlier install stay, so a redeploy keeps the endpoint id.
        """
        cli, env = endpoint_cli(), self._env()
        actions: list[Action] = [Who(who_runs_what(self.site, self.endpoint_dir)), WriteFiles(self.endpoint_dir, self.files)]
        if self.endpoint_dir.exists() and self._running():
            actions.append(RunCommand([cli, "stop", self.name], timeout=60, env=env))
        start = [cli, "start", self.name, "--detach"]
        if self.site.endpoint.privileged and not _is_root():
            # started by anyone else, Globus Compute ignores the identity mapping and serves one user only
            prefix = "".join(f"{k}={v} " for k, v in env.items())
            actions.append(Notice(f"a privileged endpoint must be started by root: sudo {prefix}{RunCommand(start).describe()}"))
        elif has_credentials():
            actions.append(RunCommand(start, timeout=120, env=env))
        else:
            prefix = "".join(f"{k}={v} " for k, v in env.items())
            actions.append(Notice(
                "no Globus credentials here (GLOBUS_COMPUTE_CLIENT_ID/GLOBUS_COMPUTE_CLIENT_SECRET, or "
                f"`{cli} login`); once logged in, run: {prefix}{RunCommand(start).describe()}"
            ))
        return actions

    def teardown_plan(self) -> list[Action]:
        """Stop the endpoint if it runs, then remove its folder.

        The endpoint stays registered with Globus Compute (offline); ``globus-compute-endpoint
        delete NAME`` also removes the registration, which needs the cloud.
        """
        actions: list[Action] = []
        if self.endpoint_dir.exists() and self._running():
            actions.append(RunCommand([endpoint_cli(), "stop", self.name], timeout=60, env=self._env()))
        actions.append(RemovePath(self.endpoint_dir))
        return actions

    def status(self) -> DeployStatus:
        """Installed? Same config as the site record renders? Running (fresh pid file)? Endpoint id?"""
        details: dict[str, Any] = {"endpoint_dir": str(self.endpoint_dir)}
        if not self.endpoint_dir.is_dir():
            return DeployStatus(self.name, self.kind, "not-installed", details)
        stale = [name for name, text in self.files.items() if _read(self.endpoint_dir / name) != text]
        details["config"] = "differs from the site record: " + ", ".join(stale) if stale else "current"
        try:
            details["endpoint_id"] = json.loads((self.endpoint_dir / "endpoint.json").read_text())["endpoint_id"]
        except (OSError, ValueError, KeyError, TypeError):
            details["endpoint_id"] = None  # not registered yet: never started
        return DeployStatus(self.name, self.kind, "running" if self._running() else "installed", details)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
