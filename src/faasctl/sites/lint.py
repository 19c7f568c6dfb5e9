"""Site lint: the rules a facility (or Globus Compute's start-up) imposes, checked at render time.

Globus Compute's loader checks that an endpoint config is well formed; it cannot know that
Polaris' compute nodes reach the login nodes on ``hsn0``, or that a root-run endpoint without
an ``email`` will refuse to start. These rules can. Each `Rule` names the record fields it
reads and the published source it comes from, so an admin can check the reason:

* ``batch-*``, ``k8s-*`` and ``privileged-*`` rules hold for every site of that kind;
* ``polaris-*``, ``perlmutter-*`` and ``expanse-*`` rules hold for records whose ``facility``
  names that facility (the shipped files set it; a copy keeps it under another name).

`check_site` runs them all and raises one `SiteConfigError` (exit status 2) listing every
broken rule, one ``rule: field = value: why (source)`` clause each.

Example:
    >>> from faasctl.sites import load_site
    >>> [v.rule for v in lint_site(load_site("polaris", overrides=["engine.interface=bond0"]))]
    ['polaris-hsn0']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faasctl.exceptions import SiteConfigError
from faasctl.sites.model import KubernetesSettings, PBSProSettings, SiteRecord, _Batch

__all__ = ["Rule", "Violation", "RULES", "lint_site", "check_site"]

GC = "https://github.com/globus/globus-compute/blob/845796f"
ALCF = "https://github.com/argonne-lcf/user-guides/blob/7d04a3f"
#: the fewest seconds a scheduler command may take before parsl gives up on it
MIN_CMD_TIMEOUT = 60
#: Polaris' queues a user may submit to (ALCF: Running Jobs on Polaris)
POLARIS_QUEUES = ("debug", "debug-scaling", "prod", "preemptable", "capacity")


@dataclass(frozen=True)
class Violation:
    """One broken rule: the rule, the field to blame, its value and why."""

    rule: str
    field: str
    value: Any
    message: str
    source: str

    def __str__(self) -> str:
        value = repr(self.value)
        if len(value) > 80:  # worker_init and friends: enough to recognise, still one line
            value = value[:77] + "..."
        return f"rule {self.rule}: {self.field} = {value}: {self.message} (source: {self.source})"


@dataclass(frozen=True)
class Rule:
    """A facility or Globus Compute rule.

    Attributes:
        id: short name shown in errors, ``<scope>-<what>``.
        applies: whether the rule concerns a record.
        check: returns ``(field, value, message)`` when the record breaks the rule, else None.
        source: where the rule is published.
    """

    id: str
    applies: Callable[[SiteRecord], bool]
    check: Callable[[SiteRecord], tuple[str, Any, str] | None]
    source: str

    def __call__(self, site: SiteRecord) -> Violation | None:
        if not self.applies(site):
            return None
        broken = self.check(site)
        return Violation(self.id, *broken, self.source) if broken else None


def _batch(site: SiteRecord) -> bool:
    return isinstance(site.provider, _Batch)


def _at(facility: str) -> Callable[[SiteRecord], bool]:
    return lambda site: site.facility == facility


def _unless(ok: bool, field: str, value: Any, message: str) -> tuple[str, Any, str] | None:
    return None if ok else (field, value, message)


def _exports(site: SiteRecord, name: str, value: str | None = None) -> bool:
    """Whether worker_init exports ``name`` (with ``value``, when given)."""
    wanted = re.escape(value) if value is not None else r"\S+"
    return re.search(rf"(^|[\s;])export\s+{name}={wanted}(\s|;|$)", site.worker_init) is not None


def _interface(name: str) -> Callable[[SiteRecord], tuple[str, Any, str] | None]:
    def check(site: SiteRecord) -> tuple[str, Any, str] | None:
        if site.engine.address:  # an explicit address is the admin's call
            return None
        return _unless(
            site.engine.interface == name, "engine.interface", site.engine.interface,
            f"the compute nodes reach the login nodes on {name}",
        )
    return check


def _account(what: str) -> Callable[[SiteRecord], tuple[str, Any, str] | None]:
    """Jobs must name ``what`` (a project, an allocation): a fixed account, or one each user must give."""
    return lambda s: _unless(
        s.provider.account is not None or s.provider.account_required, "provider.account_required", s.provider.account_required,
        f"{what}: set provider.account or account_required: true",
    )


def _cpus_per_task(site: SiteRecord) -> tuple[str, Any, str] | None:
    launcher = getattr(site.provider, "launcher", None)
    if launcher is None or launcher.type != "SrunLauncher":
        return None
    overrides = launcher.overrides or ""
    return _unless(
        re.search(r"(^|\s)(-c\s*\d+|--cpus-per-task[=\s]\d+)", overrides) is not None,
        "provider.launcher.overrides", launcher.overrides,
        "srun without -c gives the task one CPU, so every worker of the node shares it: add -c <cores>",
    )


def _polaris_queue(site: SiteRecord) -> tuple[str, Any, str] | None:
    assert isinstance(site.provider, PBSProSettings)
    for field, queue in [("provider.queue", site.provider.queue), *(("provider.queues", q) for q in site.provider.queues)]:
        if queue not in POLARIS_QUEUES:
            return field, queue, f"not a Polaris queue users can submit to ({', '.join(POLARIS_QUEUES)})"
    return None


def _apptainer(site: SiteRecord) -> bool:
    return site.container is not None and site.container.type in ("apptainer", "singularity")


def _fakeroot(site: SiteRecord) -> tuple[str, Any, str] | None:
    assert site.container is not None and isinstance(site.provider, _Batch)
    if "--fakeroot" not in site.container.options.split():
        return "container.options", site.container.options, "Apptainer on Polaris compute nodes needs --fakeroot"
    return _unless(
        "singularity_fakeroot=true" in site.provider.scheduler_options.replace(" ", ""),
        "provider.scheduler_options", site.provider.scheduler_options,
        "--fakeroot needs the job resource '#PBS -l singularity_fakeroot=true'",
    )


RULES: tuple[Rule, ...] = (
    # --- every batch site
    Rule(
        "batch-cmd-timeout", _batch,
        lambda s: _unless(
            s.provider.cmd_timeout >= MIN_CMD_TIMEOUT, "provider.cmd_timeout", s.provider.cmd_timeout,
            f"a busy scheduler answers sbatch/qsub/squeue slower than that; use at least {MIN_CMD_TIMEOUT} s (GC's examples: 120)",
        ),
        f"{GC}/docs/endpoints/configs/perlmutter.yaml ('increase the command timeouts')",
    ),
    # --- Kubernetes
    Rule(
        "k8s-unencrypted", lambda s: isinstance(s.provider, KubernetesSettings),
        lambda s: _unless(
            s.engine.options.get("encrypted", False) is False, "engine.options.encrypted", s.engine.options.get("encrypted"),
            "Globus Compute does not support encryption with the KubernetesProvider: workers would never connect",
        ),
        f"{GC}/docs/endpoints/configs/kube.yaml",
    ),
    Rule(
        "k8s-non-root", lambda s: isinstance(s.provider, KubernetesSettings),
        lambda s: _unless(
            s.provider.run_as_non_root and s.provider.user_id is not None, "provider.run_as_non_root", s.provider.run_as_non_root,
            "worker pods must run as a non-root uid (run_as_non_root: true and user_id) to pass the restricted pod security level",
        ),
        "https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted",
    ),
    Rule(
        "k8s-not-privileged", lambda s: isinstance(s.provider, KubernetesSettings),
        lambda s: _unless(
            not s.endpoint.privileged, "endpoint.privileged", True,
            "the chart's endpoint pod runs as uid 1000 under the restricted pod security level, never as root; "
            "run one endpoint per user or group instead",
        ),
        "https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted",
    ),
    # --- privileged (multi-user) endpoints
    Rule(
        "privileged-email", lambda s: s.endpoint.privileged,
        lambda s: _unless(s.endpoint.email is not None, "endpoint.email", None, "a privileged endpoint will not start without a contact email"),
        "globus-compute-endpoint 4.19 cli.py ('Multi-user endpoints require a contact email address')",
    ),
    Rule(
        "privileged-identity-mapping", lambda s: s.endpoint.privileged,
        lambda s: _unless(
            bool(s.endpoint.identity_mapping or s.endpoint.identity_mapping_config_path), "endpoint.identity_mapping", [],
            "a privileged endpoint must map Globus identities to local users: give identity_mapping rules "
            "(or identity_mapping_config_path)",
        ),
        f"{GC}/compute_endpoint/globus_compute_endpoint/endpoint/config/config.py (identity_mapping_config_path: 'if privileged, ... required')",
    ),
    Rule(
        "high-assurance", lambda s: s.endpoint.high_assurance,
        lambda s: _unless(
            s.endpoint.subscription_id is not None and s.endpoint.authentication_policy is not None,
            "endpoint.subscription_id" if s.endpoint.subscription_id is None else "endpoint.authentication_policy", None,
            "a high-assurance endpoint needs an HA subscription_id and an authentication_policy",
        ),
        "globus-compute-endpoint 4.19 cli.py ('High Assurance(HA) endpoints require both a HA policy and a HA subscription id')",
    ),
    Rule(
        "admins-subscription", lambda s: bool(s.endpoint.admins),
        lambda s: _unless(
            s.endpoint.subscription_id is not None, "endpoint.subscription_id", None,
            "endpoint admins need an active Globus subscription (subscription_id)",
        ),
        f"{GC}/compute_endpoint/globus_compute_endpoint/endpoint/config/config.py (BaseConfig: admins)",
    ),
    # --- ALCF Polaris
    Rule(
        "polaris-hsn0", _at("polaris"), _interface("hsn0"),
        f"{GC}/docs/endpoints/configs/polaris.yaml (commit d2657f24: bond0 -> hsn0)",
    ),
    Rule(
        "polaris-tmpdir", _at("polaris"),
        lambda s: _unless(
            _exports(s, "TMPDIR", "/tmp"), "worker_init", s.worker_init,
            "export TMPDIR=/tmp: single-node parsl jobs otherwise fail with 'AF_UNIX path too long'",
        ),
        f"{ALCF}/docs/polaris/workflows/parsl.md (Known Issues)",
    ),
    Rule(
        "polaris-system", lambda s: s.facility == "polaris" and isinstance(s.provider, PBSProSettings),
        lambda s: _unless(
            "system=polaris" in s.provider.select_options.split(":"), "provider.select_options", s.provider.select_options,
            "Polaris jobs select system=polaris (e.g. 'ngpus=4:system=polaris')",
        ),
        f"{ALCF}/docs/services/globus-compute.md (select_options default) and docs/polaris/containers/containers.md",
    ),
    Rule(
        "polaris-queue", lambda s: s.facility == "polaris" and isinstance(s.provider, PBSProSettings), _polaris_queue,
        f"{ALCF}/docs/polaris/running-jobs/index.md (Queues)",
    ),
    Rule(
        "polaris-account", lambda s: s.facility == "polaris" and _batch(s),
        _account("ALCF jobs must name a project"),
        f"{ALCF}/docs/services/globus-compute.md ('queue and account are required options')",
    ),
    Rule(
        "polaris-fakeroot", lambda s: s.facility == "polaris" and _apptainer(s) and _batch(s), _fakeroot,
        f"{ALCF}/docs/polaris/containers/containers.md ('Always use the --fakeroot flag on Polaris compute nodes')",
    ),
    Rule(
        "polaris-proxy", lambda s: s.facility == "polaris" and _apptainer(s),
        lambda s: _unless(
            _exports(s, "HTTPS_PROXY") and _exports(s, "https_proxy"), "worker_init", s.worker_init,
            "compute nodes pull images only through the proxy: export HTTP(S)_PROXY and http(s)_proxy",
        ),
        f"{ALCF}/docs/polaris/containers/containers.md (proxy setup for internet access)",
    ),
    # --- NERSC Perlmutter
    Rule(
        "perlmutter-hsn0", _at("perlmutter"), _interface("hsn0"),
        f"{GC}/docs/endpoints/configs/perlmutter.yaml",
    ),
    Rule(
        "perlmutter-srun-cpus", _at("perlmutter"), _cpus_per_task,
        f"{GC}/docs/endpoints/configs/perlmutter.yaml (overrides: -c 128)",
    ),
    Rule(
        "perlmutter-cmd-timeout", lambda s: s.facility == "perlmutter" and _batch(s),
        lambda s: _unless(
            s.provider.cmd_timeout >= 120, "provider.cmd_timeout", s.provider.cmd_timeout,
            "NERSC's Slurm answers slowly under load: use at least 120 s",
        ),
        f"{GC}/docs/endpoints/configs/perlmutter.yaml (cmd_timeout: 120)",
    ),
    Rule(
        "perlmutter-containers", lambda s: s.facility == "perlmutter" and s.container is not None,
        lambda s: _unless(
            s.container is not None and s.container.type == "podman-hpc", "container.type", s.container and s.container.type,
            "Perlmutter runs OCI images with podman-hpc",
        ),
        "https://nersc.gitlab.io/development/containers/ (podman-hpc is Perlmutter's container runtime)",
    ),
    # --- SDSC Expanse
    Rule(
        "expanse-account", lambda s: s.facility == "expanse" and _batch(s),
        _account("Expanse jobs must name an allocation"),
        f"{GC}/docs/endpoints/configs/expanse.yaml (account: {{{{ ACCOUNT }}}}, a value each user must give)",
    ),
    Rule(
        "expanse-ib0", _at("expanse"), _interface("ib0"),
        f"{GC}/docs/endpoints/configs/expanse.yaml",
    ),
)


def lint_site(site: SiteRecord) -> list[Violation]:
    """Every rule ``site`` breaks, in `RULES` order."""
    return [v for rule in RULES if (v := rule(site)) is not None]


def check_site(site: SiteRecord) -> None:
    """Raise when ``site`` breaks a rule.

    Raises:
        SiteConfigError: one line naming the site (and its file), each broken rule, the
            field, its value and the rule's source.
    """
    violations = lint_site(site)
    if violations:
        where = f"site {site.name!r}" + (f" ({site.source})" if site.source else "")
        raise SiteConfigError(f"{where}: " + "; ".join(str(v) for v in violations))
