"""Endpoint folders rendered from site records, checked with Globus Compute's own code.

Every test here uses the real globus-compute-endpoint 4.x: ``render_config_user_template``
renders the user template and ``load_config_yaml`` builds the real GlobusComputeEngine
and parsl provider (never started; nothing talks to the Globus cloud).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.exceptions import RenderError, SiteConfigError
from faasctl.sites.render import (
    ENDPOINT_FILES,
    endpoint_templates_dir,
    load_endpoint_config,
    parsl_provider,
    render_endpoint,
    validate_endpoint,
    write_endpoint,
)
from faasctl.sites import PROVIDER_FAMILIES, SiteRecord, load_site, shipped_sites_dir

GOLDEN = Path(__file__).parent / "golden"
SHIPPED = sorted(p.stem for p in shipped_sites_dir().glob("*.yaml"))
REGEN = "python tests/golden/regen.py"


@pytest.fixture(autouse=True)
def no_admin_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty admin folder, so a developer's ~/.config/faasctl/sites cannot leak in."""
    folder = tmp_path / "admin-sites"
    folder.mkdir()
    monkeypatch.setenv("FAASCTL_SITES_DIR", str(folder))


def _core(files: dict[str, str]) -> Any:
    """config.yaml loaded by Globus Compute; a privileged one reads the mapping file rendered beside it."""
    import tempfile

    from globus_compute_endpoint.endpoint.config.utils import get_config

    from faasctl.sites.render import _with_local_mapping

    with tempfile.TemporaryDirectory() as tmp:
        write_endpoint(_with_local_mapping(files, Path(tmp)), tmp, validate=False)
        return get_config(Path(tmp))


@pytest.fixture
def loaded() -> Any:
    """Load an endpoint folder with Globus Compute's loader; shut every engine down after."""
    engines = []

    def load(files: dict[str, str], user_values: dict[str, Any] | None = None) -> Any:
        config = load_endpoint_config(files, user_values)
        engines.append(config.engine)
        return config

    yield load
    for engine in engines:
        engine.shutdown()


# ---------------------------------------------------------------------------- every shipped site


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_site_renders_and_loads(name: str, loaded: Any) -> None:
    site = load_site(name)
    files = render_endpoint(site)
    assert list(files) == list(ENDPOINT_FILES)

    core = _core(files)
    assert type(core).__name__ == "CoreEndpointConfig"  # no engine: templates per user
    config = loaded(files)
    assert type(config).__name__ == "UserEndpointConfig"
    assert type(config.engine).__name__ == "GlobusComputeEngine"
    provider = config.engine.executor.provider
    assert type(provider).__name__ == site.provider.type
    assert provider.max_blocks == site.provider.max_blocks
    assert provider.init_blocks == site.provider.init_blocks
    assert "export OMP_NUM_THREADS=1" in provider.worker_init

    # the largest values the schema allows render and load too
    schema = json.loads(files["user_config_schema.json"])
    at_bounds = {key: spec["maximum"] for key, spec in schema["properties"].items() if "maximum" in spec}
    at_bounds |= {key: "proj1" for key in schema.get("required", [])}  # account, where the facility requires one
    provider = loaded(files, at_bounds).engine.executor.provider
    assert provider.max_blocks == site.provider.max_blocks


@pytest.mark.parametrize("name", SHIPPED)
def test_rendered_text_matches_golden(name: str) -> None:
    files = render_endpoint(load_site(name))
    for file_name, text in files.items():
        golden = GOLDEN / name / file_name
        assert golden.exists(), f"{golden} is missing: run {REGEN}"
        assert text == golden.read_text(), f"{golden} differs from the rendered file: review, then run {REGEN}"


def test_golden_folders_are_the_shipped_sites() -> None:
    folders = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name[0] not in "_.")
    assert folders == SHIPPED, f"run {REGEN}"


def test_family_docs_show_the_golden_files() -> None:
    spec = importlib.util.spec_from_file_location("golden_regen", GOLDEN / "regen.py")
    assert spec and spec.loader
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    pages = {page.stem: regen.doc_blocks(page.read_text()) for page in sorted(regen.DOCS.glob("*.md"))}
    assert set(pages) == {"slurm", "pbs", "kubernetes", "local"}
    for page, blocks in pages.items():
        assert len(blocks) >= 3, f"docs/sites/{page}.md should show a rendered folder"
        for ref, body in blocks:
            assert body == (GOLDEN / ref).read_text(), f"docs/sites/{page}.md: {ref} is stale: run {REGEN}"


def test_templates_per_family_with_comment_headers() -> None:
    root = endpoint_templates_dir()
    assert (root / "config.yaml.j2").is_file()
    for family in PROVIDER_FAMILIES.values():
        for name in ("user_config_template.yaml.j2", "user_config_schema.json.j2"):
            text = (root / family / name).read_text()
            assert text.startswith("[#-"), f"{family}/{name} should open with a comment header"
    for template in root.rglob("*.j2"):
        assert template.read_text().startswith("[#-"), f"{template} should open with a comment header"


# ---------------------------------------------------------------------------- river, end to end


def test_cli_render_river_out(tmp_path: Path) -> None:
    out = tmp_path / "ep"
    result = CliRunner().invoke(app, ["render", "--site", "river", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(ENDPOINT_FILES)
    for name, text in render_endpoint(load_site("river")).items():
        assert (out / name).read_text() == text
    assert "globus-compute-endpoint start ep" in result.stdout


def test_cli_render_privileged_names_the_mapping_where_it_will_be_installed(tmp_path: Path) -> None:
    """Rendered for review elsewhere, config.yaml still names the mapping file in root's folder, where root runs it."""
    sets = [arg for value in PRIVILEGED for arg in ("--set", value)]
    result = CliRunner().invoke(app, ["render", "--site", "river", *sets, "--out", str(tmp_path / "river")])
    assert result.exit_code == 0, result.output
    config = (tmp_path / "river" / "config.yaml").read_text()
    assert 'identity_mapping_config_path: "/root/.globus_compute/river/identity_mapping_config.json"' in config
    assert "Install: copy the folder to /root/.globus_compute/river/" in result.output
    assert (tmp_path / "river" / "identity_mapping_config.json").is_file()


def test_cli_render_refuses_a_typo_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ep"
    result = CliRunner().invoke(app, ["render", "--site", "river", "--set", "provider.max_blokcs=8", "--out", str(out)])
    assert result.exit_code == 2
    assert "site 'river'" in result.output and "provider.max_blokcs = 8 (from --set)" in result.output
    assert not out.exists()


def test_cli_render_refused_by_the_loader_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ep"
    result = CliRunner().invoke(app, ["render", "--site", "river", "--set", "provider.options.max_blokcs=8", "--out", str(out)])
    assert result.exit_code == 2
    assert "provider.options.max_blokcs = 8 refused by Globus Compute's loader" in result.output
    assert not out.exists()


def test_cli_render_print_and_usage(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["render", "--site", "local", "--print"])
    assert result.exit_code == 0, result.output
    for name, text in render_endpoint(load_site("local")).items():
        assert f"# ==> {name} <==\n{text}" in result.stdout
    assert runner.invoke(app, ["render", "--site", "local"]).exit_code == 2  # neither --out nor --print
    assert runner.invoke(app, ["render", "--print"]).exit_code == 2  # no site
    site_file = tmp_path / "mine.yaml"
    site_file.write_text("provider: {type: LocalProvider}\n")
    result = runner.invoke(app, ["render", "--site-file", str(site_file), "--print"])
    assert result.exit_code == 0 and "# faasctl-site: mine" in result.stdout


def test_globus_compute_render_user_config_accepts_river(tmp_path: Path) -> None:
    """`globus-compute-endpoint render-user-config` (offline) renders the folder; the loader takes its output."""
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

    cli = shutil.which("globus-compute-endpoint", path=str(Path(sys.executable).parent))
    assert cli, "globus-compute-endpoint is a dependency; its CLI must be installed next to python"
    out = tmp_path / "river"
    write_endpoint(render_endpoint(load_site("river")), out)
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"account": "m1234", "walltime_minutes": 45}))
    env = {**os.environ, "GLOBUS_COMPUTE_USER_DIR": str(tmp_path / "gc")}  # keep ~/.globus_compute untouched

    for extra, account, walltime in (([], None, "01:00:00"), (["-o", str(options)], "m1234", "00:45:00")):
        run = subprocess.run([cli, "render-user-config", "-e", str(out), *extra], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        config = load_config_yaml(run.stdout)
        try:
            provider = config.engine.executor.provider
            assert (provider.max_blocks, provider.nodes_per_block, provider.account, provider.walltime) == (4, 1, account, walltime)
        finally:
            config.engine.shutdown()



# ---------------------------------------------------------------------------- errors


def _tampered(name: str, old: str, new: str) -> dict[str, str]:
    files = render_endpoint(load_site(name))
    assert old in files["user_config_template.yaml.j2"]
    files["user_config_template.yaml.j2"] = files["user_config_template.yaml.j2"].replace(old, new, 1)
    return files


def test_loader_refuses_misspelled_provider_key() -> None:
    files = _tampered("river", "    exclusive: true", "    exclusive: true\n    max_blokcs: 3")
    with pytest.raises(RenderError, match=r"site 'river': provider.max_blokcs = 3 refused by Globus Compute's loader: .*unexpected keyword argument 'max_blokcs'"):
        validate_endpoint(files)


def test_loader_refuses_unknown_provider() -> None:
    files = _tampered("river", "type: SlurmProvider", "type: SlurmProvidr")
    with pytest.raises(RenderError, match=r"provider.type = 'SlurmProvidr' refused .* not a valid provider"):
        validate_endpoint(files)


def test_loader_refuses_container_uri_with_kubernetes() -> None:
    files = _tampered("kubernetes", "  provider:", '  container_uri: "ghcr.io/x/y:1"\n  provider:')
    with pytest.raises(RenderError, match=r"site 'kubernetes': engine.container_uri = 'ghcr.io/x/y:1' refused .*not compatible with KubernetesProvider"):
        validate_endpoint(files)


def test_site_name_comes_from_the_header_without_a_record() -> None:
    files = dict(_tampered("local", "type: LocalProvider", "type: LocalProvidr"))  # a plain dict: no .site
    with pytest.raises(RenderError, match=r"site 'local': provider.type"):
        validate_endpoint(files)


@pytest.mark.parametrize(
    ("override", "field", "detail"),
    [
        ("provider.options.max_blokcs=8", "provider.options.max_blokcs = 8", "unexpected keyword argument"),
        ("provider.options.mem_per_node=abc", "provider.options.mem_per_node = 'abc'", "is not an instance of int"),
        ("provider.launcher.bind_cmd=--cpu-bind", "provider.launcher.bind_cmd = '--cpu-bind'", "SrunLauncher"),
        ("engine.options.encrypted=maybe", "engine.options.encrypted = 'maybe'", "not an instance of bool"),
    ],
)
def test_loader_errors_name_the_site_field(override: str, field: str, detail: str) -> None:
    files = render_endpoint(load_site("river", overrides=[override]))
    with pytest.raises(RenderError) as info:
        validate_endpoint(files)
    assert f"site 'river': {field} refused by Globus Compute's loader" in str(info.value)
    assert detail in str(info.value)
    assert info.value.exit_code == 2


def test_pydantic_catches_k8s_init_blocks_before_rendering() -> None:
    with pytest.raises(SiteConfigError, match="provider.init_blocks = 1 .*must be 0 on Kubernetes"):
        load_site("kubernetes", overrides=["provider.init_blocks=1"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_blocks": 5}, "user option max_blocks = 5 refused by user_config_schema.json: 5 is greater than the maximum of 4"),
        ({"walltime_minutes": "60"}, "user option walltime_minutes = '60' refused"),
        ({"account": "a b; rm -rf ~"}, "user option account = 'a b; rm -rf ~' refused"),
        ({"colour": "red"}, "user option colour = 'red' is not one this endpoint accepts (allowed: account, max_blocks"),
        ({"parent_config": {}}, "user option parent_config = {} is not one this endpoint accepts"),
    ],
)
def test_user_values_outside_the_schema(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError) as info:
        validate_endpoint(render_endpoint(load_site("river")), values)
    assert f"site 'river': {message}" in str(info.value)


def test_user_values_reach_the_provider(loaded: Any) -> None:
    files = render_endpoint(load_site("expanse"))
    config = loaded(files, {"account": "abc123", "max_blocks": 2, "nodes_per_block": 1, "walltime_minutes": 105, "max_workers_per_node": 16})
    provider = config.engine.executor.provider
    assert (provider.account, provider.max_blocks, provider.walltime) == ("abc123", 2, "01:45:00")
    assert config.engine.executor.max_workers_per_node == 16
    default = loaded(files, {"account": "abc123"}).engine.executor.provider
    assert (default.account, default.max_blocks, default.walltime) == ("abc123", 4, "02:00:00")


def test_a_required_account_must_be_sent() -> None:
    """Expanse and Polaris refuse jobs without an account: the schema makes users name one."""
    for name in ("expanse", "polaris"):
        files = render_endpoint(load_site(name))
        assert json.loads(files["user_config_schema.json"])["required"] == ["account"]
        with pytest.raises(RenderError, match=f"site '{name}': .*'account' is a required property"):
            validate_endpoint(files, {})
    # a site default satisfies it: the schema no longer requires the option
    files = render_endpoint(load_site("expanse", overrides=["provider.account=abc123"]))
    assert "required" not in json.loads(files["user_config_schema.json"])
    validate_endpoint(files, {})


def test_polaris_queue_is_the_users_choice_within_the_sites_list(loaded: Any) -> None:
    files = render_endpoint(load_site("polaris"))
    assert loaded(files, {"account": "P"}).engine.executor.provider.queue == "debug"
    assert loaded(files, {"account": "P", "queue": "prod"}).engine.executor.provider.queue == "prod"
    with pytest.raises(RenderError, match="user option queue = 'demand' refused"):
        validate_endpoint(files, {"account": "P", "queue": "demand"})


def test_site_account_is_the_default_and_users_may_override_it(loaded: Any) -> None:
    files = render_endpoint(load_site("polaris", overrides=["provider.account=Proj"]))
    assert loaded(files).engine.executor.provider.account == "Proj"
    assert loaded(files, {"account": "Other"}).engine.executor.provider.account == "Other"


def test_write_endpoint_validates_first(tmp_path: Path) -> None:
    files = _tampered("river", "type: SlurmProvider", "type: SlurmProvidr")
    with pytest.raises(RenderError):
        write_endpoint(files, tmp_path / "ep")
    assert not (tmp_path / "ep").exists()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.py").write_text("config = None\n")
    with pytest.raises(RenderError, match="config.py exists, and Globus Compute reads it instead"):
        write_endpoint(render_endpoint(load_site("local")), legacy)
    assert sorted(p.name for p in legacy.iterdir()) == ["config.py"]
    with pytest.raises(RenderError, match="not a plain file name"):
        write_endpoint({"../x": ""}, tmp_path / "ep2", validate=False)


def test_validating_kubernetes_leaves_no_kubeconfig_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kubernetes.client import Configuration
    from kubernetes.config import kube_config

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # a broken admin kubeconfig does not matter
    before = (kube_config.KUBE_CONFIG_DEFAULT_LOCATION, getattr(Configuration, "_default", None))
    validate_endpoint(render_endpoint(load_site("kubernetes")))
    assert os.environ["KUBECONFIG"] == str(tmp_path / "absent")
    assert (kube_config.KUBE_CONFIG_DEFAULT_LOCATION, getattr(Configuration, "_default", None)) == before
    monkeypatch.delenv("KUBECONFIG")
    validate_endpoint(render_endpoint(load_site("kubernetes")))
    assert "KUBECONFIG" not in os.environ


def test_site_values_are_not_templates_for_the_endpoint(loaded: Any) -> None:
    """A site value with Jinja syntax reaches the worker verbatim (the endpoint renders the file again)."""
    site = load_site("local", overrides=["worker_init=echo '{{ max_blocks }} {% raw %}'"])
    provider = loaded(render_endpoint(site)).engine.executor.provider
    assert "echo '{{ max_blocks }} {% raw %}'" in provider.worker_init
    site = load_site("slurm", overrides=["provider.account='a#}b{{'", "endpoint.display_name='EP {{ x }}'"])
    files = render_endpoint(site)
    assert loaded(files).engine.executor.provider.account == "a#}b{{"
    assert _core(files).display_name == "EP {{ x }}"  # config.yaml is plain YAML, not a template
    with pytest.raises(RenderError, match="cannot be escaped"):
        render_endpoint(load_site("local", overrides=["worker_init='{% endraw %}{{ x }}'"]))


def test_missing_interface_is_resolved_on_the_endpoint_host(loaded: Any) -> None:
    files = render_endpoint(load_site("river", overrides=["engine.interface=faasctl-no-such-if0"]))
    assert "ifname: \"faasctl-no-such-if0\"" in files["user_config_template.yaml.j2"]
    assert loaded(files).engine.executor.address == "127.0.0.1"


def test_identity_mapping_file_must_exist(tmp_path: Path) -> None:
    files = render_endpoint(load_site("local", overrides=[f"endpoint.identity_mapping_config_path={tmp_path / 'idmap.json'}"]))
    with pytest.raises(RenderError, match=r"site 'local': config.yaml is refused .*endpoint.identity_mapping_config_path: .*not found"):
        validate_endpoint(files)


@pytest.mark.parametrize("name", ["river", "perlmutter"])
def test_privileged_endpoint_folder_with_identity_mapping(name: str, tmp_path: Path) -> None:
    """A multi-user endpoint: config.yaml names the mapping file beside it; Globus Compute loads both,
    and its own mapper turns a UChicago identity into the local user of the same name."""
    from globus_compute_endpoint.endpoint.identity_mapper import PosixIdentityMapper

    site = load_site(name, overrides=PRIVILEGED)
    files = render_endpoint(site, endpoint_dir=tmp_path / name)
    assert list(files) == [*ENDPOINT_FILES, "identity_mapping_config.json"]
    mapping_path = tmp_path / name / "identity_mapping_config.json"
    assert f"identity_mapping_config_path: {json.dumps(str(mapping_path))}" in files["config.yaml"]
    validate_endpoint(files)  # config.yaml as CoreEndpointConfig (needs the file), mapping, user template
    write_endpoint(files, tmp_path / name)
    from globus_compute_endpoint.endpoint.config.utils import get_config

    core = get_config(tmp_path / name)  # the installed folder, read as the endpoint reads it
    assert (core.email, core.identity_mapping_config_path) == ("admin@uchicago.edu", mapping_path)
    mapper = PosixIdentityMapper(mapping_path, "test")
    try:
        identities = [{"id": "0c3d0f0a-0000-4000-8000-000000000001", "username": "alice@uchicago.edu", "status": "used"},
                      {"id": "0c3d0f0a-0000-4000-8000-000000000002", "username": "mallory@example.org", "status": "used"}]
        assert mapper.map_identities(identities) == [[{"0c3d0f0a-0000-4000-8000-000000000001": ["alice"]}]]
    finally:
        mapper.stop_watching()
    # by default the file is where a root-run endpoint keeps its folder
    assert f'"/root/.globus_compute/{name}/identity_mapping_config.json"' in render_endpoint(site)["config.yaml"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("[{DATA_TYPE: expression_identity_mapping#1.0.0, mappings: [{source: '{username}'}]}]", "refused by Globus Compute"),
        ("[{DATA_TYPE: no_such_mapping#1.0.0}]", "holds no rule Globus Compute can use"),
    ],
)
def test_broken_identity_mapping_is_refused(rule: str, message: str) -> None:
    site = load_site("river", overrides=[*PRIVILEGED[:2], f"endpoint.identity_mapping={rule}"])
    with pytest.raises(RenderError, match=f"site 'river': endpoint.identity_mapping .*{message}"):
        validate_endpoint(render_endpoint(site))


def test_privileged_keys_need_a_privileged_endpoint() -> None:
    with pytest.raises(SiteConfigError, match="endpoint.identity_mapping = .*only used by a privileged endpoint"):
        load_site("river", overrides=[PRIVILEGED[2]])
    with pytest.raises(SiteConfigError, match="endpoint.identity_mapping_config_path = '/etc/idmap.json'.*not both"):
        load_site("river", overrides=[*PRIVILEGED, "endpoint.identity_mapping_config_path=/etc/idmap.json"])


def test_perlmutter_offers_podman_hpc(loaded: Any) -> None:
    """NERSC's container path: the pyhf worker image through podman-hpc, with the srun -c fix kept."""
    site = load_site("perlmutter", overrides=["image=ghcr.io/faasctl/faasctl-worker:0.1.0-cpu", "container.type=podman-hpc"])
    config = loaded(render_endpoint(site), {"account": "m1234"})
    assert (config.engine.container_type, config.engine.container_uri) == ("podman-hpc", site.image)
    provider = config.engine.executor.provider
    assert provider.launcher.overrides.startswith("-c 256") and provider.cmd_timeout == 120


def test_apptainer_image_reference() -> None:
    docker_ref = render_endpoint(load_site("river"))["user_config_template.yaml.j2"]
    assert 'container_uri: "docker://ghcr.io/faasctl/faasctl-worker:0.1.0-cpu"' in docker_ref
    sif = render_endpoint(load_site("river", overrides=["image=/scratch/worker.sif"]))["user_config_template.yaml.j2"]
    assert 'container_uri: "/scratch/worker.sif"' in sif


def test_parsl_provider_for_direct_mode() -> None:
    provider = parsl_provider(load_site("river"))
    assert type(provider).__name__ == "SlurmProvider"
    assert (provider.max_blocks, provider.nodes_per_block, provider.walltime) == (4, 1, "01:00:00")
    assert type(provider.launcher).__name__ == "SrunLauncher"
    assert parsl_provider(load_site("river"), {"max_blocks": 2}).max_blocks == 2
    assert type(parsl_provider(load_site("local"))).__name__ == "LocalProvider"


# ---------------------------------------------------------------------------- every field, through the loader


@dataclass
class Result:
    site: SiteRecord
    files: dict[str, str]
    config: Any  # UserEndpointConfig (rendered user template, loaded)
    core: Any  # CoreEndpointConfig (config.yaml)

    @property
    def engine(self) -> Any:
        return self.config.engine

    @property
    def provider(self) -> Any:
        return self.config.engine.executor.provider


Check = Callable[[Result], Any]
UUID_A, UUID_B = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-9999-aaaaaaaaaaaa"
#: a privileged river endpoint: UChicago identities run as the local user of the same name
UCHICAGO_RULE = "[{DATA_TYPE: expression_identity_mapping#1.0.0, mappings: [{source: '{username}', match: '(.*)@uchicago\\.edu', output: '{0}'}]}]"
PRIVILEGED = ["endpoint.privileged=true", "endpoint.email=admin@uchicago.edu", f"endpoint.identity_mapping={UCHICAGO_RULE}"]
#: field (as _field_paths names it) -> (site, --set overrides, check on the loaded endpoint)
FIELD_CASES: dict[str, tuple[str, list[str], Check]] = {
    "name": ("local", ["name=local-b"], lambda r: "# faasctl-site: local-b" in r.files["config.yaml"]),
    "description": ("local", ["description=Laptop"], lambda r: r.site.description == "Laptop"),  # shown by `sites list` (test_sites)
    "endpoint.display_name": ("local", ["endpoint.display_name=My EP"], lambda r: r.core.display_name == "My EP"),
    "endpoint.amqp_port": ("local", ["endpoint.amqp_port=443"], lambda r: r.core.amqp_port == 443),
    "endpoint.identity_mapping_config_path": (  # the file must exist: see test_identity_mapping_file_must_exist
        "local", [f"endpoint.identity_mapping_config_path={Path(__file__)}"],
        lambda r: r.core.identity_mapping_config_path == Path(__file__),
    ),
    "facility": ("polaris", [], lambda r: r.site.facility == "polaris"),  # its rules: tests/test_lint.py
    "endpoint.privileged": ("river", PRIVILEGED, lambda r: r.core.email == "admin@uchicago.edu"),
    "endpoint.email": ("river", PRIVILEGED, lambda r: r.core.email == "admin@uchicago.edu"),
    "endpoint.identity_mapping": (
        "river", PRIVILEGED, lambda r: json.loads(r.files["identity_mapping_config.json"])[0]["mappings"][0]["match"] == "(.*)@uchicago\\.edu",
    ),
    "endpoint.admins": ("local", [f"endpoint.admins=[{UUID_A}]", f"endpoint.subscription_id={UUID_B}"], lambda r: r.core.admins == (UUID_A,)),
    "endpoint.allowed_functions": ("local", [f"endpoint.allowed_functions=[{UUID_A}]"], lambda r: r.core.allowed_functions == (UUID_A,)),
    "endpoint.authentication_policy": ("local", [f"endpoint.authentication_policy={UUID_A}"], lambda r: r.core.authentication_policy == UUID_A),
    "endpoint.subscription_id": ("local", [f"endpoint.subscription_id={UUID_B}"], lambda r: r.core.subscription_id == UUID_B),
    "endpoint.public": ("local", ["endpoint.public=true"], lambda r: r.core.public is True),
    "endpoint.high_assurance": (
        "local", ["endpoint.high_assurance=true", f"endpoint.subscription_id={UUID_B}", f"endpoint.authentication_policy={UUID_A}"],
        lambda r: r.core.high_assurance is True,
    ),
    "endpoint.audit_log_path": ("river", [*PRIVILEGED, "endpoint.audit_log_path=/var/log/gc-audit.log"], lambda r: str(r.core.audit_log_path) == "/var/log/gc-audit.log"),
    "endpoint.pam.enable": ("river", [*PRIVILEGED, "endpoint.pam.enable=true"], lambda r: r.core.pam.enable is True),
    "endpoint.pam.service_name": (
        "river", [*PRIVILEGED, "endpoint.pam.service_name=gce"], lambda r: r.core.pam.service_name == "gce",
    ),
    "endpoint.idle_heartbeats_soft": ("local", ["endpoint.idle_heartbeats_soft=3"], lambda r: r.config.idle_heartbeats_soft == 3),
    "endpoint.idle_heartbeats_hard": ("local", ["endpoint.idle_heartbeats_hard=7"], lambda r: r.config.idle_heartbeats_hard == 7),
    "engine.max_workers_per_node": ("slurm", ["engine.max_workers_per_node=7"], lambda r: r.engine.executor.max_workers_per_node == 7),
    "engine.available_accelerators": ("slurm", ["engine.available_accelerators=2"], lambda r: r.engine.executor.available_accelerators == ["0", "1"]),
    "engine.address": ("slurm", ["engine.address=10.1.2.3"], lambda r: r.engine.executor.address == "10.1.2.3"),
    "engine.interface": ("slurm", ["engine.interface=lo"], lambda r: r.engine.executor.address == "127.0.0.1"),
    "engine.options": ("slurm", ["engine.options.heartbeat_period=11"], lambda r: r.engine.executor.heartbeat_period == 11),
    "image": ("river", ["image=reg.example/w:2"], lambda r: r.engine.container_uri == "docker://reg.example/w:2"),
    "container.type": ("river", ["container.type=podman"], lambda r: (r.engine.container_type, r.engine.container_uri) == ("podman", r.site.image)),
    "container.options": ("river", ["container.options=--nv"], lambda r: r.engine.container_cmd_options == "--nv"),
    "worker_init": ("slurm", ["worker_init=module load py"], lambda r: r.provider.worker_init.startswith("module load py\n")),
}
for _type, _site in (("SlurmProvider", "slurm"), ("PBSProProvider", "polaris"), ("KubernetesProvider", "kubernetes"), ("LocalProvider", "local")):
    FIELD_CASES |= {
        f"provider[{_type}].type": (_site, [], lambda r, t=_type: type(r.provider).__name__ == t),
        f"provider[{_type}].init_blocks": (
            _site, [] if _type == "KubernetesProvider" else ["provider.init_blocks=1"],
            lambda r: r.provider.init_blocks == r.site.provider.init_blocks,
        ),
        f"provider[{_type}].min_blocks": (_site, ["provider.min_blocks=1"], lambda r: r.provider.min_blocks == 1),
        f"provider[{_type}].max_blocks": (_site, ["provider.max_blocks=3"], lambda r: r.provider.max_blocks == 3),
        f"provider[{_type}].nodes_per_block": (_site, ["provider.nodes_per_block=2"], lambda r: r.provider.nodes_per_block == 2),
        f"provider[{_type}].options": (_site, ["provider.options.parallelism=0.5"], lambda r: r.provider.parallelism == 0.5),
    }
for _type, _site in (("SlurmProvider", "slurm"), ("PBSProProvider", "polaris")):
    FIELD_CASES |= {
        f"provider[{_type}].walltime": (_site, ["provider.walltime=00:45:00"], lambda r: r.provider.walltime == "00:45:00"),
        f"provider[{_type}].account": (_site, ["provider.account=proj1"], lambda r: r.provider.account == "proj1"),
        f"provider[{_type}].scheduler_options": (
            _site, ["provider.scheduler_options='#X --opt'", "container=null", "image=null"], lambda r: "#X --opt" in r.provider.scheduler_options,
        ),
        f"provider[{_type}].cmd_timeout": (_site, ["provider.cmd_timeout=300"], lambda r: r.provider.cmd_timeout == 300),
        f"provider[{_type}].account_required": (
            _site, ["provider.account_required=true"], lambda r: json.loads(r.files["user_config_schema.json"])["required"] == ["account"],
        ),
        f"provider[{_type}].launcher.type": (_site, ["provider.launcher={type: SimpleLauncher}"], lambda r: type(r.provider.launcher).__name__ == "SimpleLauncher"),
        f"provider[{_type}].launcher.overrides": (
            _site, ["provider.launcher={type: SrunLauncher, overrides: --exclusive}"], lambda r: r.provider.launcher.overrides == "--exclusive",
        ),
        f"provider[{_type}].launcher.bind_cmd": (
            _site, ["provider.launcher={type: MpiExecLauncher, bind_cmd: --bind-to}"], lambda r: r.provider.launcher.bind_cmd == "--bind-to",
        ),
    }
FIELD_CASES |= {
    "provider[SlurmProvider].partition": ("slurm", ["provider.partition=short"], lambda r: r.provider.partition == "short"),
    "provider[SlurmProvider].qos": ("slurm", ["provider.qos=debug"], lambda r: r.provider.qos == "debug"),
    "provider[SlurmProvider].constraint": ("slurm", ["provider.constraint=gpu"], lambda r: r.provider.constraint == "gpu"),
    "provider[SlurmProvider].exclusive": ("slurm", ["provider.exclusive=true"], lambda r: r.provider.exclusive is True),
    "provider[PBSProProvider].queue": ("polaris", ["provider.queue=prod"], lambda r: r.provider.queue == "prod"),
    "provider[PBSProProvider].cpus_per_node": ("polaris", ["provider.cpus_per_node=32"], lambda r: r.provider.cpus_per_node == 32),
    "provider[PBSProProvider].select_options": (
        "polaris", ["provider.select_options=ngpus=2:system=polaris"], lambda r: r.provider.select_options == "ngpus=2:system=polaris",
    ),
    "provider[PBSProProvider].queues": ("polaris", ["provider.queues=[prod]"], lambda r: r.provider.queue == "debug" and '"prod"' in r.files["user_config_schema.json"]),
    "provider[KubernetesProvider].user_id": ("kubernetes", ["provider.user_id=2000"], lambda r: r.provider.user_id == "2000"),
    "provider[KubernetesProvider].group_id": ("kubernetes", ["provider.group_id=3000"], lambda r: r.provider.group_id == "3000"),
    "provider[KubernetesProvider].run_as_non_root": ("kubernetes", [], lambda r: r.provider.run_as_non_root is True),
    "provider[KubernetesProvider].namespace": ("kubernetes", ["provider.namespace=hep"], lambda r: r.provider.namespace == "hep"),
    "provider[KubernetesProvider].init_cpu": ("kubernetes", ["provider.init_cpu=0.5"], lambda r: r.provider.init_cpu == 0.5),
    "provider[KubernetesProvider].max_cpu": ("kubernetes", ["provider.max_cpu=3"], lambda r: r.provider.max_cpu == 3),
    "provider[KubernetesProvider].init_mem": ("kubernetes", ["provider.init_mem=512Mi"], lambda r: r.provider.init_mem == "512Mi"),
    "provider[KubernetesProvider].max_mem": ("kubernetes", ["provider.max_mem=4Gi"], lambda r: r.provider.max_mem == "4Gi"),
    "provider[KubernetesProvider].secret": ("kubernetes", ["provider.secret=pull"], lambda r: r.provider.secret == "pull"),
    "provider[KubernetesProvider].service_account_name": (
        "kubernetes", ["provider.service_account_name=sa"], lambda r: r.provider.service_account_name == "sa",
    ),
    "provider[LocalProvider].launcher.type": ("local", ["provider.launcher.type=SimpleLauncher"], lambda r: type(r.provider.launcher).__name__ == "SimpleLauncher"),
    "provider[LocalProvider].launcher.overrides": (
        "local", ["provider.launcher={type: SrunLauncher, overrides: -n1}"], lambda r: r.provider.launcher.overrides == "-n1",
    ),
    "provider[LocalProvider].launcher.bind_cmd": (
        "local", ["provider.launcher={type: MpiExecLauncher, bind_cmd: --bind-to}"], lambda r: r.provider.launcher.bind_cmd == "--bind-to",
    ),
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (Optional[X], Annotated[Union[...], ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, info in model.model_fields.items():
        models = _models(info.annotation)
        if name == "provider" and not prefix:
            for variant in models:
                tag = typing.get_args(variant.model_fields["type"].annotation)[0]
                paths |= _field_paths(variant, f"provider[{tag}].")
        elif models:
            for sub in models:
                paths |= _field_paths(sub, f"{prefix}{name}.")
        else:
            paths.add(prefix + name)
    return paths


def test_every_site_record_field_has_a_rendering_test() -> None:
    """Guard: a new SiteRecord field needs a FIELD_CASES entry (cf. globus-compute's test_config_opts_accounted_for_in_tests)."""
    fields = _field_paths(SiteRecord)
    assert len(fields) > 40
    assert set(FIELD_CASES) == fields, (
        f"fields without a case: {sorted(fields - set(FIELD_CASES))}; cases without a field: {sorted(set(FIELD_CASES) - fields)}"
    )


@pytest.mark.parametrize("field", sorted(FIELD_CASES))
def test_field_reaches_the_loaded_endpoint(field: str) -> None:
    name, overrides, check = FIELD_CASES[field]
    site = load_site(name, overrides=overrides)
    files = render_endpoint(site)
    config = load_endpoint_config(files)
    try:
        assert check(Result(site, files, config, _core(files))), f"{field}: {overrides} did not reach the loaded endpoint"
    finally:
        config.engine.shutdown()
