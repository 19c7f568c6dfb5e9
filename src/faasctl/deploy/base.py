"""What every deployer does: plan the actions, run them, report status, tear down.

A deployment is a list of `Action` s computed up front by `Deployer.plan`. ``--dry-run``
prints that list; `Deployer.deploy` runs the same list, so what a dry run shows is exactly
what a real run does::

    site record --render--> endpoint files --plan--> [WriteFiles, RunCommand, ...] --deploy--> done
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from faasctl.exceptions import DeployError
from faasctl.files import atomic_write

__all__ = ["Action", "WriteFiles", "RunCommand", "RemovePath", "Notice", "Who", "DeployStatus", "Deployer"]

log = logging.getLogger(__name__)


class Action(abc.ABC):
    """One step of a deployment or teardown."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The step as one line: the exact command, or what is written or removed where."""

    @abc.abstractmethod
    def apply(self) -> None:
        """Do the step.

        Raises:
            DeployError: the step failed.
        """

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class WriteFiles(Action):
    """Write ``files`` (name -> text) into ``directory``, leaving its other files alone.

    Args:
        directory: the folder (created with mode 0700, as Globus Compute does).
        files: file name -> content.
        mode: permission bits of the files written.
    """

    directory: Path
    files: Mapping[str, str]
    mode: int = 0o600

    def describe(self) -> str:
        listing = ", ".join(
            f"{name} ({len(text.encode())} B, sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"
            for name, text in self.files.items()
        )
        return f"write {self.directory}/: {listing}"

    def apply(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name, text in self.files.items():
                atomic_write(self.directory / name, lambda fh, text=text: fh.write(text), mode=self.mode)
        except OSError as err:
            raise DeployError(f"cannot write the endpoint files into {self.directory}: {err}") from err
        log.info("wrote %s into %s", ", ".join(self.files), self.directory)


@dataclass(frozen=True)
class RunCommand(Action):
    """Run a command (no shell), failing with its stderr.

    Args:
        argv: the command and its arguments.
        timeout: seconds before it is killed.
        env: extra environment variables (names only are shown by `describe`).
    """

    argv: Sequence[str]
    timeout: float = 600
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return shlex.join(self.argv)

    def run(self) -> subprocess.CompletedProcess[str]:
        """Run the command and return its result (used by status queries as well)."""
        if shutil.which(self.argv[0]) is None:
            raise DeployError(f"{self.argv[0]} is not installed or not on PATH (needed for: {self.describe()})")
        log.info("running %s", self.describe())
        try:
            done = subprocess.run(
                list(self.argv), capture_output=True, text=True, timeout=self.timeout,
                env={**os.environ, **self.env} if self.env else None, check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise DeployError(f"{self.describe()} did not finish in {self.timeout:g} s") from err
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise DeployError(
                f"{self.describe()} failed with exit status {done.returncode}: {' / '.join(detail[-5:]) or 'no output'}"
            )
        return done

    def apply(self) -> None:
        self.run()


@dataclass(frozen=True)
class RemovePath(Action):
    """Remove a file or a folder tree (nothing if it is absent)."""

    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"

    def apply(self) -> None:
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            else:
                self.path.unlink(missing_ok=True)
        except OSError as err:
            raise DeployError(f"cannot remove {self.path}: {err}") from err


@dataclass(frozen=True)
class Notice(Action):
    """A step left to the user (e.g. a command that needs credentials faasctl does not have)."""

    message: str

    def describe(self) -> str:
        return f"to do by hand: {self.message}"

    def apply(self) -> None:
        # shown to the user with the plan; nothing to do here
        log.info("left to the user: %s", self.message)


@dataclass(frozen=True)
class Who(Action):
    """Which accounts the deployment runs as: the endpoint, the users it serves, the workers."""

    message: str

    def describe(self) -> str:
        return f"who: {self.message}"

    def apply(self) -> None:
        log.info("who runs what: %s", self.message)


@dataclass
class DeployStatus:
    """What `Deployer.status` found.

    Attributes:
        site: the site name.
        kind: the deployer (``helm``, ``batch``).
        state: one word: ``not-installed``, ``installed`` (config in place, not running),
            ``running``, ``deployed`` (helm release exists), ``failed``, ``unknown``.
        details: what else was found (paths, endpoint id, helm release info).
    """

    site: str
    kind: str
    state: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.state in ("running", "deployed")


class Deployer(abc.ABC):
    """Deploys one site's Globus Compute endpoint.

    Args:
        site: the site record (`faasctl.sites.SiteRecord`).
        files: the rendered endpoint folder (file name -> text); default:
            `faasctl.sites.render.render_endpoint` of ``site``.
    """

    #: short name shown in plans and status
    kind: ClassVar[str]

    def __init__(self, site: Any, *, files: Mapping[str, str] | None = None) -> None:
        self.site = site
        self._files = dict(files) if files is not None else None

    @property
    def name(self) -> str:
        return str(self.site.name)

    @property
    def files(self) -> dict[str, str]:
        """The endpoint folder as `faasctl render` writes it, checked by Globus Compute's loader.

        Raises:
            RenderError: the site's endpoint config is refused (nothing is deployed).
        """
        if self._files is None:
            from faasctl.sites.render import render_endpoint, validate_endpoint

            files = render_endpoint(self.site, **self.render_options())
            validate_endpoint(files, site=self.site)
            self._files = dict(files)
        return self._files

    def render_options(self) -> dict[str, Any]:
        """Keyword arguments of `faasctl.sites.render.render_endpoint` for this deployment."""
        return {}

    @abc.abstractmethod
    def plan(self) -> list[Action]:
        """The exact actions `deploy` runs, in order."""

    @abc.abstractmethod
    def teardown_plan(self) -> list[Action]:
        """The exact actions `teardown` runs, in order."""

    @abc.abstractmethod
    def status(self) -> DeployStatus:
        """Where the endpoint stands (read-only)."""

    def deploy(self) -> list[Action]:
        """Run `plan`'s actions; returns them.

        Raises:
            DeployError: an action failed (the ones before it stay done).
        """
        return self.apply(self.plan())

    def teardown(self) -> list[Action]:
        """Run `teardown_plan`'s actions; returns them."""
        return self.apply(self.teardown_plan())

    def apply(self, actions: Sequence[Action]) -> list[Action]:
        """Run ``actions`` (a plan already shown to the user) in order; returns them.

        Raises:
            DeployError: an action failed (the ones before it stay done).
        """
        for action in actions:
            log.info("site %s: %s", self.name, action.describe())
            action.apply()
        return list(actions)
