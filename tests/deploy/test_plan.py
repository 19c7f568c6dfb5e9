"""Deploy plans, endpoint-folder installs and the deploy/status/teardown CLI; no services needed.

The Globus Compute cloud cannot be reached here, so ``globus-compute-endpoint start`` never
runs in these tests: they check the install (real files in a temporary
GLOBUS_COMPUTE_USER_DIR, read back by Globus Compute's own loader) and the exact commands
planned. The direct-mode parsl Config is built for real (nothing started).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.deploy import DEPLOYERS, Notice, RemovePath, RunCommand, Who, WriteFiles, deployer_for
from faasctl.executors.site import site_config
from faasctl.deploy.helm import HelmDeployer
from faasctl.deploy.batch import BatchDeployer, endpoint_cli
from faasctl.study import WORKER_ENV
from faasctl.exceptions import DeployError
from faasctl.sites.render import render_endpoint
from faasctl.sites import PROVIDER_FAMILIES, load_site

runner = CliRunner()


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Globus Compute folder, and no Globus credentials in the environment."""
    folder = tmp_path / "gc"
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(folder))
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID", raising=False)
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET", raising=False)
    return folder


def test_every_provider_family_has_a_deployer() -> None:
    assert set(DEPLOYERS) == set(PROVIDER_FAMILIES)
    assert isinstance(deployer_for(load_site("river")), BatchDeployer)
    assert isinstance(deployer_for(load_site("polaris")), BatchDeployer)
    assert isinstance(deployer_for(load_site("kubernetes")), HelmDeployer)


def test_river_plan_without_credentials(user_dir: Path) -> None:
    who, write, notice = deployer_for(load_site("river")).plan()
    assert isinstance(who, Who) and who.describe().startswith("who: single-user endpoint: runs as ")
    assert isinstance(write, WriteFiles) and write.directory == user_dir / "river"
    assert write.files == dict(render_endpoint(load_site("river")))
    assert isinstance(notice, Notice)
    assert f"{endpoint_cli()} start river --detach" in notice.describe()


def test_river_plan_with_credentials(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Globus cloud: only the presence of the variables matters for the plan; nothing is sent.
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "not-a-secret")
    _, _, start = deployer_for(load_site("river")).plan()
    assert isinstance(start, RunCommand)
    assert list(start.argv) == [endpoint_cli(), "start", "river", "--detach"]
    assert "not-a-secret" not in start.describe()


def test_install_status_teardown(user_dir: Path) -> None:
    """deploy writes the folder Globus Compute reads; status sees it; teardown removes it."""
    from globus_compute_endpoint.endpoint.config.utils import get_config

    site = load_site("slurm")
    deployer = BatchDeployer(site)
    assert deployer.status().state == "not-installed"
    actions = deployer.deploy()  # writes the files; the start is a Notice (no credentials)
    assert [type(a) for a in actions] == [Who, WriteFiles, Notice]
    folder = user_dir / "slurm"
    assert {p.name: p.read_text() for p in folder.iterdir()} == dict(render_endpoint(site))
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert type(get_config(folder)).__name__ == "CoreEndpointConfig"

    # an earlier registration (endpoint.json) survives a redeploy
    (folder / "endpoint.json").write_text(json.dumps({"endpoint_id": "0b6f3a6e-0000-4000-8000-000000000000"}))
    BatchDeployer(load_site("slurm", overrides=["provider.max_blocks=3"])).deploy()
    status = deployer.status()
    assert status.state == "installed" and not status.healthy
    assert status.details["endpoint_id"] == "0b6f3a6e-0000-4000-8000-000000000000"
    assert status.details["config"].startswith("differs from the site record: user_config_template.yaml.j2")

    # a fresh pid file is how Globus Compute marks a running endpoint
    (folder / "daemon.pid").write_text("1\n")
    assert deployer.status().state == "running"
    stop, remove = deployer.teardown_plan()
    assert list(stop.argv) == [endpoint_cli(), "stop", "slurm"] and remove == RemovePath(folder)
    (folder / "daemon.pid").unlink()
    assert [type(a) for a in deployer.teardown()] == [RemovePath]
    assert not folder.exists()


PRIVILEGED = [
    "endpoint.privileged=true", "endpoint.email=admin@uchicago.edu",
    "endpoint.identity_mapping=[{DATA_TYPE: expression_identity_mapping#1.0.0, "
    "mappings: [{source: '{username}', match: '(.*)@uchicago\\.edu', output: '{0}'}]}]",
]


@pytest.mark.parametrize("name", ["river", "perlmutter"])
def test_privileged_plan_says_who_runs_what_as_whom(name: str, user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-user endpoint: root runs the manager, mapped accounts run their endpoints and jobs."""
    from globus_compute_endpoint.endpoint.config.utils import get_config

    monkeypatch.setattr("faasctl.deploy.batch._is_root", lambda: False)  # as an admin's dry run before sudo
    deployer = deployer_for(load_site(name, overrides=PRIVILEGED))
    who, write, start = deployer.plan()
    folder = user_dir / name
    assert isinstance(who, Who)
    assert "privileged multi-user endpoint: the endpoint manager runs as root" in who.describe()
    assert f"mapped to a local account by {folder / 'identity_mapping_config.json'}" in who.describe()
    assert "{username} ~ (.*)@uchicago\\.edu -> {0}" in who.describe()
    assert "as Slurm jobs (sbatch)" in who.describe()
    assert isinstance(start, Notice) and f"must be started by root: sudo {endpoint_cli()} start {name} --detach" in start.describe()
    # the installed folder names its own mapping file, and Globus Compute reads both
    write.apply()
    assert json.loads((folder / "identity_mapping_config.json").read_text())[0]["mappings"][0]["output"] == "{0}"
    core = get_config(folder)
    assert core.identity_mapping_config_path == folder / "identity_mapping_config.json"
    assert core.email == "admin@uchicago.edu"


def test_cli_deploy_dry_run_shows_the_privileged_setup(user_dir: Path) -> None:
    args = ["deploy", "--site", "river", "--dry-run"] + [x for o in PRIVILEGED for x in ("--set", o)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "who: privileged multi-user endpoint" in text and "identity_mapping_config.json" in text
    assert '"DATA_TYPE": "expression_identity_mapping#1.0.0"' in text  # the mapping file's content


def test_refused_config_deploys_nothing(user_dir: Path) -> None:
    from faasctl.exceptions import RenderError

    site = load_site("slurm", overrides=["provider.options.no_such_option=1"])
    with pytest.raises(RenderError, match="no_such_option"):
        BatchDeployer(site).plan()
    assert not user_dir.exists()


def test_failed_command_is_a_deploy_error() -> None:
    with pytest.raises(DeployError, match="exit status 3: boom"):
        RunCommand([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]).apply()
    with pytest.raises(DeployError, match="not installed or not on PATH"):
        RunCommand(["/nonexistent/helm", "version"]).apply()


def test_helm_needs_a_kubernetes_site() -> None:
    with pytest.raises(DeployError, match="KubernetesProvider sites, not SlurmProvider"):
        HelmDeployer(load_site("river"))


def test_cli_deploy_dry_run_river(user_dir: Path) -> None:
    result = runner.invoke(app, ["deploy", "--site", "river", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"write {user_dir / 'river'}/: config.yaml" in result.output
    assert "start river --detach" in result.output
    assert "type: SlurmProvider" in result.output  # the files' content is shown too
    assert not user_dir.exists()


def test_cli_deploy_dry_run_kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    values = tmp_path / "more.yaml"
    values.write_text("endpoint:\n  nodeSelector:\n    pool: services\n")
    result = runner.invoke(app, ["deploy", "--site", "kubernetes", "--dry-run", "--secret", "gc-client", "--values", str(values)])
    assert result.exit_code == 0, result.output
    assert "upgrade --install kubernetes" in result.output and "--namespace faasctl --create-namespace" in result.output
    assert "secretName: gc-client" in result.output and "pool: services" in result.output
    assert not (tmp_path / "faasctl").exists()

    values.write_text("rbac:\n  create: maybe\n")
    result = runner.invoke(app, ["deploy", "--site", "kubernetes", "--dry-run", "--values", str(values)])
    assert result.exit_code == DeployError.exit_code
    assert "rbac.create: 'maybe' is not of type 'boolean'" in result.output


def test_cli_status_and_teardown(user_dir: Path) -> None:
    result = runner.invoke(app, ["status", "--site", "slurm", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["state"] == "not-installed"
    result = runner.invoke(app, ["teardown", "--site", "slurm", "--dry-run"])
    assert result.exit_code == 0 and f"remove {user_dir / 'slurm'}" in result.output


# --------------------------------------------------------------------------- direct mode


def _config(site: Any, tmp_path: Path, **kwargs: Any) -> Any:
    return site_config(site, run_dir=tmp_path, **kwargs)


def test_direct_config_slurm(tmp_path: Path) -> None:
    site = load_site("slurm", overrides=["provider.max_blocks=2", "worker_init=module load python"])
    config = _config(site, tmp_path, worker_init="echo extra", heartbeat_threshold=7)
    (htex,) = config.executors
    provider = htex.provider
    assert type(provider).__name__ == "SlurmProvider" and provider.max_blocks == 2
    assert config.strategy == "htex_auto_scale" and config.strategy_period < 1
    assert provider.status_polling_interval == 10  # parsl's Slurm default is 60 s
    assert htex.heartbeat_threshold == 7
    assert htex.interchange_launch_cmd[0] == sys.executable
    lines = provider.worker_init.splitlines()
    assert lines[0] == f"export PATH={Path(sys.executable).parent}:\"$PATH\""
    assert lines.index("module load python") < lines.index("echo extra")
    for key in WORKER_ENV:
        assert f"export {key}=" in provider.worker_init


def test_direct_config_container_site(tmp_path: Path) -> None:
    (htex,) = _config(load_site("river"), tmp_path).executors
    assert htex.launch_cmd.startswith("apptainer run docker://ghcr.io/faasctl/faasctl-worker")
    assert "export PATH=" not in htex.provider.worker_init  # the image brings its own Python
    assert htex.provider.max_blocks == 4
