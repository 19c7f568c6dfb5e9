"""The site record: what a facility admin writes down once per cluster.

A site record says which parsl provider runs the workers (Slurm, PBS Pro, Kubernetes or
local processes) and with which partition/queue, account, blocks, walltime, launcher,
worker environment (``worker_init`` or a container image) and network address.
``faasctl.sites.render`` turns it into a Globus Compute endpoint folder.

A record may also make the endpoint privileged (multi-user: run as root, mapping each Globus
identity to a local account) and carry Globus Compute's security keys (``endpoint.*``); its
``facility`` names whose published rules ``faasctl.sites.lint`` checks at render time.

The models only check shapes, types and combinations that are known to be wrong; anything
passed through ``options`` goes verbatim to parsl and is checked by Globus Compute's own
loader when the endpoint is rendered (``faasctl.sites.render.validate_endpoint``). Validators
here are pure: they never touch the file system or the network.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

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
    "FieldError",
]

#: parsl provider class -> endpoint template family (folder in ``endpoint_templates/``).
PROVIDER_FAMILIES = {
    "SlurmProvider": "slurm",
    "PBSProProvider": "pbspro",
    "KubernetesProvider": "kubernetes",
    "LocalProvider": "local",
}

#: the identity mapping file written into the endpoint folder (Globus Compute's own default name)
IDENTITY_MAPPING_FILE = "identity_mapping_config.json"
#: facilities with rules in ``faasctl.sites.lint``
FACILITIES = ("polaris", "perlmutter", "expanse")

# Slurm/PBS walltime: [D-]HH:MM:SS or MM:SS
WALLTIME_PATTERN = r"^(\d+-)?\d{1,3}:[0-5]\d(:[0-5]\d)?$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class FieldError(ValueError):
    """A cross-field check failed; ``field`` is the dotted path of the value to blame."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LauncherSettings(_Model):
    """How a block starts workers on its nodes (a parsl launcher)."""

    type: Literal[
        "SrunLauncher", "MpiExecLauncher", "MpiRunLauncher", "SingleNodeLauncher", "SimpleLauncher", "GnuParallelLauncher"
    ] = Field(description="parsl launcher class")
    overrides: str | None = Field(default=None, description="extra arguments for srun/mpiexec (SrunLauncher, MpiExecLauncher)")
    bind_cmd: str | None = Field(default=None, description="CPU binding flag of mpiexec (MpiExecLauncher only)")


class _Blocks(_Model):
    """Scaling settings shared by every provider. A block is one batch job (or pod)."""

    type: str = Field(description="parsl provider class; each subclass pins its own")
    init_blocks: int = Field(default=0, ge=0, description="blocks started with the endpoint")
    min_blocks: int = Field(default=0, ge=0, description="blocks kept even when idle")
    max_blocks: int = Field(default=1, ge=1, description="most blocks at once")
    nodes_per_block: int = Field(default=1, ge=1, description="nodes per block")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="further keyword arguments of the parsl provider, passed as is (checked by Globus Compute's loader)",
    )

    @model_validator(mode="after")
    def _options_are_extra(self) -> _Blocks:
        # the template writes these itself; a second copy in options would silently win or lose
        taken = set(type(self).model_fields) | {"worker_init", "image", "launcher"}
        for key in self.options:
            if key in taken:
                hint = key if key in ("worker_init", "image") else f"provider.{key}"
                raise FieldError(f"provider.options.{key}", self.options[key], f"faasctl sets {key} itself: use {hint}")
        return self

    @model_validator(mode="after")
    def _blocks_in_order(self) -> _Blocks:
        for name in ("init_blocks", "min_blocks"):
            value = getattr(self, name)
            if value > self.max_blocks:
                raise FieldError(f"provider.{name}", value, f"{name} ({value}) exceeds max_blocks ({self.max_blocks})")
        return self


class _Batch(_Blocks):
    walltime: str = Field(default="01:00:00", description="wall time of one block, HH:MM:SS (quote it)")
    account: str | None = Field(default=None, description="allocation charged; null: users name theirs (user option 'account') or the scheduler's default")
    account_required: bool = Field(
        default=False, description="the scheduler refuses jobs without an account: with account null, users must send 'account'"
    )
    cmd_timeout: int = Field(
        default=120, ge=1, description="seconds parsl waits for sbatch/qsub/squeue/qstat (parsl's default, 10 s, is short for busy schedulers)"
    )
    scheduler_options: str = Field(default="", description="extra lines for the batch script header (#SBATCH / #PBS ...)")

    @field_validator("walltime")
    @classmethod
    def _walltime_format(cls, value: str) -> str:
        if not re.fullmatch(WALLTIME_PATTERN, value):
            raise ValueError('expected [D-]HH:MM:SS or MM:SS, e.g. "01:30:00"')
        return value

    def walltime_minutes(self) -> int:
        """The walltime rounded up to whole minutes."""
        days, _, clock = self.walltime.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 2:  # MM:SS
            parts.insert(0, 0)
        hours, minutes, seconds = parts
        return (int(days or 0) * 24 + hours) * 60 + minutes + math.ceil(seconds / 60)


class SlurmSettings(_Batch):
    """A Slurm cluster (parsl ``SlurmProvider``)."""

    type: Literal["SlurmProvider"]
    partition: str | None = Field(default=None, description="partition; null: the cluster's default partition")
    qos: str | None = Field(default=None, description="quality of service (--qos)")
    constraint: str | None = Field(default=None, description="node features (--constraint)")
    exclusive: bool = Field(default=True, description="ask for whole nodes (--exclusive)")
    launcher: LauncherSettings = Field(default_factory=lambda: LauncherSettings(type="SrunLauncher"))


class PBSProSettings(_Batch):
    """A PBS Pro cluster (parsl ``PBSProProvider``)."""

    type: Literal["PBSProProvider"]
    queue: str | None = Field(default=None, description="queue; null: the server's default queue")
    queues: list[str] = Field(
        default_factory=list, description="further queues users may pick (user option 'queue'); the site's queue stays the default"
    )
    cpus_per_node: int = Field(default=1, ge=1, description="ncpus in the select statement")
    select_options: str = Field(default="", description="more select resources, e.g. ngpus=4")
    launcher: LauncherSettings = Field(default_factory=lambda: LauncherSettings(type="SingleNodeLauncher"))

    @model_validator(mode="after")
    def _queues_need_a_default(self) -> PBSProSettings:
        if self.queues and self.queue is None:
            raise FieldError("provider.queue", None, "provider.queues lists the choices; provider.queue must name the default")
        return self


class KubernetesSettings(_Blocks):
    """Worker pods in a Kubernetes namespace (parsl ``KubernetesProvider``); the pod runs ``image``."""

    type: Literal["KubernetesProvider"]
    namespace: str = Field(default="default", description="namespace of the worker pods")
    init_cpu: float = Field(default=1, gt=0, description="CPU request of a worker pod")
    max_cpu: float = Field(default=2, gt=0, description="CPU limit of a worker pod")
    init_mem: str = Field(default="1Gi", description="memory request of a worker pod")
    max_mem: str = Field(default="2Gi", description="memory limit of a worker pod")
    secret: str | None = Field(default=None, description="image pull secret")
    service_account_name: str | None = Field(default=None, description="service account of the worker pods")
    user_id: int | None = Field(default=1000, ge=1, description="uid the worker container runs as (securityContext.runAsUser)")
    group_id: int | None = Field(default=1000, ge=1, description="gid the worker container runs as (securityContext.runAsGroup)")
    run_as_non_root: bool = Field(default=True, description="refuse to start a worker container as root (securityContext.runAsNonRoot)")

    @field_validator("init_blocks")
    @classmethod
    def _no_init_blocks(cls, value: int) -> int:
        # Pods must only start on demand: each user endpoint would otherwise start its own
        # idle pods at once, and a pod that cannot be scheduled blocks the endpoint start.
        if value != 0:
            raise ValueError("must be 0 on Kubernetes: worker pods start on demand (min_blocks keeps warm pods)")
        return value


class LocalSettings(_Blocks):
    """Worker processes on the endpoint host itself (parsl ``LocalProvider``)."""

    type: Literal["LocalProvider"]
    launcher: LauncherSettings = Field(default_factory=lambda: LauncherSettings(type="SingleNodeLauncher"))


ProviderSettings = Annotated[
    Union[SlurmSettings, PBSProSettings, KubernetesSettings, LocalSettings], Field(discriminator="type")
]


class EngineSettings(_Model):
    """The ``GlobusComputeEngine`` (parsl HighThroughputExecutor) in front of the workers."""

    max_workers_per_node: int | None = Field(default=None, ge=1, description="workers per node; null: one per core")
    available_accelerators: int | None = Field(default=None, ge=1, description="GPUs per node, one worker pinned to each")
    address: str | None = Field(default=None, description="IP/host name workers connect back to")
    interface: str | None = Field(default=None, description="network interface whose address workers connect to (e.g. ib0)")
    options: dict[str, Any] = Field(default_factory=dict, description="further GlobusComputeEngine keyword arguments, passed as is")

    @model_validator(mode="after")
    def _options_are_extra(self) -> EngineSettings:
        hints = {
            "type": "nothing (always GlobusComputeEngine)",
            "provider": "provider",
            "max_workers_per_node": "engine.max_workers_per_node",
            "available_accelerators": "engine.available_accelerators",
            "address": "engine.address or engine.interface",
            "container_type": "container.type",
            "container_uri": "image",
            "container_cmd_options": "container.options",
        }
        for key in self.options:
            if key in hints:
                raise FieldError(f"engine.options.{key}", self.options[key], f"faasctl sets {key} itself: use {hints[key]}")
        return self

    @model_validator(mode="after")
    def _one_address(self) -> EngineSettings:
        if self.address and self.interface:
            raise FieldError("engine.interface", self.interface, "set engine.address or engine.interface, not both")
        return self


class PamSettings(_Model):
    """PAM authorisation of each user endpoint start (Globus Compute ``PamConfiguration``)."""

    enable: bool = Field(default=True, description="open a PAM session (account and session checks) for each user endpoint")
    service_name: str = Field(default="globus-compute-endpoint", description="the PAM service in /etc/pam.d/")


class EndpointSettings(_Model):
    """Endpoint-level settings: the core ``config.yaml`` and the user endpoint's idle timers.

    A *privileged* endpoint is Globus Compute's multi-user endpoint: it runs as root, maps
    each Globus identity that sends tasks to a local account (``identity_mapping``) and
    starts one user endpoint per mapped account, as that account. Without ``privileged``
    the endpoint runs as whoever starts it and accepts only its owner's tasks.
    """

    display_name: str | None = Field(default=None, description="name shown in the Globus web app")
    amqp_port: Literal[443, 5671, 5672] | None = Field(default=None, description="port to the Globus Compute service; 443 where 5671 is blocked")
    privileged: bool = Field(default=False, description="multi-user endpoint run as root: one user endpoint per mapped identity, as that local user")
    email: str | None = Field(default=None, description="admin contact shown to users; required to start a privileged endpoint")
    identity_mapping: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Globus identity -> local user rules (Globus Compute's identity mapping config), written to "
        "identity_mapping_config.json beside config.yaml",
    )
    identity_mapping_config_path: str | None = Field(
        default=None,
        description="where config.yaml says the identity mapping file is; null with identity_mapping: "
        "the endpoint folder's identity_mapping_config.json",
    )
    admins: list[UUID] = Field(default_factory=list, description="Globus identity ids that may manage the endpoint (needs subscription_id)")
    allowed_functions: list[UUID] = Field(
        default_factory=list, description="ids of the only functions the endpoint runs (faasctl's registered task functions); empty: any"
    )
    authentication_policy: UUID | None = Field(default=None, description="Globus Auth policy users must satisfy (e.g. an institution's login)")
    subscription_id: UUID | None = Field(default=None, description="Globus subscription the endpoint belongs to")
    public: bool = Field(default=False, description="listed for all users in the Globus web app (visibility only, not access)")
    high_assurance: bool = Field(default=False, description="high-assurance endpoint (needs subscription_id and authentication_policy)")
    audit_log_path: str | None = Field(default=None, description="file the privileged endpoint appends task audit records to (high assurance)")
    pam: PamSettings | None = Field(default=None, description="PAM checks before each user endpoint starts (privileged only); null: off")
    idle_heartbeats_soft: int = Field(default=10, ge=0, description="idle heartbeats before a user endpoint stops")
    idle_heartbeats_hard: int = Field(default=5760, ge=0, description="heartbeats without any task movement before a user endpoint stops")

    @field_validator("email")
    @classmethod
    def _email_format(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError("expected an email address, e.g. admin@example.edu")
        return value

    @model_validator(mode="after")
    def _privileged_only(self) -> EndpointSettings:
        # Globus Compute ignores these on an endpoint that is not run as root; say so early.
        if not self.privileged:
            for key in ("identity_mapping", "pam", "audit_log_path"):
                if getattr(self, key):
                    raise FieldError(f"endpoint.{key}", getattr(self, key), "only used by a privileged endpoint: set endpoint.privileged: true")
        return self

    @model_validator(mode="after")
    def _one_mapping_source(self) -> EndpointSettings:
        # rules are written into the endpoint folder, which config.yaml then names; a path is a file kept elsewhere
        if self.identity_mapping and self.identity_mapping_config_path:
            raise FieldError(
                "endpoint.identity_mapping_config_path", self.identity_mapping_config_path,
                "give identity_mapping rules (faasctl writes identity_mapping_config.json beside config.yaml) "
                "or the path of an existing mapping file, not both",
            )
        return self


class ContainerSettings(_Model):
    """Run the workers inside ``image`` on batch/local nodes (GlobusComputeEngine container_*)."""

    type: Literal["apptainer", "singularity", "docker", "podman", "podman-hpc"]
    options: str = Field(default="", description="extra arguments of '<type> run', e.g. --nv or --bind /scratch")


class SiteRecord(_Model):
    """One site: a cluster (or this host) where a Globus Compute endpoint runs pyhf fits.

    Example:
        >>> from faasctl.sites import load_site
        >>> site = load_site("river")
        >>> site.provider.type, site.provider.max_blocks
        ('SlurmProvider', 4)
    """

    name: str = Field(description="site name, also the endpoint folder name")
    description: str = Field(default="", description="one line shown by 'faasctl sites list'")
    facility: Literal["polaris", "perlmutter", "expanse"] | None = Field(
        default=None, description="the facility whose published rules the record must follow (faasctl.sites.lint)"
    )
    endpoint: EndpointSettings = Field(default_factory=EndpointSettings)
    provider: ProviderSettings
    engine: EngineSettings = Field(default_factory=EngineSettings)
    image: str | None = Field(default=None, description="worker image (OCI reference or .sif path)")
    container: ContainerSettings | None = Field(default=None, description="how batch/local workers run image; null: no container")
    worker_init: str = Field(default="", description="shell lines run before the workers start")

    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        """The site file this record was read from (None when built in code)."""
        return self._source

    @property
    def family(self) -> str:
        """The endpoint template family: slurm, pbspro, kubernetes or local."""
        return PROVIDER_FAMILIES[self.provider.type]

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (it names the endpoint folder)")
        return value

    @model_validator(mode="after")
    def _image_and_container(self) -> SiteRecord:
        if isinstance(self.provider, KubernetesSettings):
            if self.container is not None:
                raise FieldError(
                    "container.type", self.container.type,
                    "not allowed with KubernetesProvider: the pod itself runs image (provider image), "
                    "so remove container and set image only",
                )
            if not self.image:
                raise FieldError("image", self.image, "KubernetesProvider needs image (the worker pod's image)")
        elif self.container is not None and not self.image:
            raise FieldError("image", self.image, f"container.type is {self.container.type!r} but no image is set")
        elif self.image and self.container is None:
            raise FieldError(
                "container", None,
                f"image is set but workers on {self.provider.type} run it only with a container "
                "(container.type: apptainer, singularity, docker, podman or podman-hpc); set one or drop image",
            )
        return self
