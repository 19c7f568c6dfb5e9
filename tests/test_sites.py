"""The site registry: shipped site files, admin folders, --set overrides and their errors.

Rendering and Globus Compute's loader are tested in test_render.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.exceptions import SiteConfigError
from faasctl.sites import (
    PROVIDER_FAMILIES,
    SiteRecord,
    list_sites,
    load_site,
    parse_override,
    shipped_sites_dir,
    site_paths,
    user_sites_dirs,
)

REQUIRED = {"river", "expanse", "perlmutter", "polaris", "local", "slurm", "kubernetes"}
SHIPPED = sorted(p.stem for p in shipped_sites_dir().glob("*.yaml"))


@pytest.fixture(autouse=True)
def no_admin_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty admin folder, so a developer's ~/.config/faasctl/sites cannot leak in."""
    folder = tmp_path / "admin-sites"
    folder.mkdir()
    monkeypatch.setenv("FAASCTL_SITES_DIR", str(folder))
    return folder


def test_shipped_sites_are_listed() -> None:
    assert REQUIRED <= set(list_sites())
    assert list_sites() == SHIPPED
    assert {record.provider.type for record in map(load_site, SHIPPED)} == set(PROVIDER_FAMILIES)


def test_river_is_the_published_study_cluster() -> None:
    river = load_site("river")
    assert (river.name, river.provider.type) == ("river", "SlurmProvider")
    assert (river.provider.max_blocks, river.provider.nodes_per_block) == (4, 1)
    assert river.image and "faasctl-worker" in river.image and river.container is not None
    assert river.source == str(shipped_sites_dir() / "river.yaml")


def test_site_families() -> None:
    assert load_site("expanse").provider.type == "SlurmProvider"
    assert load_site("perlmutter").provider.type == "SlurmProvider"
    assert load_site("polaris").provider.type == "PBSProProvider"
    assert load_site("kubernetes").provider.type == "KubernetesProvider"
    assert load_site("local").provider.type == "LocalProvider"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_key_of_a_shipped_site_file_has_a_comment(name: str) -> None:
    path = shipped_sites_dir() / f"{name}.yaml"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), f"{path} should open with a comment saying what the site is"
    keys = [line for line in lines if re.match(r"^\s*[A-Za-z_]+:", line)]
    uncommented = [line for line in keys if " # " not in line]
    assert not uncommented, f"{path}: keys without a comment: {uncommented}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_site_files_spell_out_every_setting(name: str) -> None:
    """Every shipped file names each field of its record, so it doubles as the reference."""
    data = yaml.safe_load((shipped_sites_dir() / f"{name}.yaml").read_text())
    record = load_site(name)
    assert data == record.model_dump(mode="json") | {"name": name}


def test_parse_override_reads_yaml_scalars() -> None:
    assert parse_override("provider.max_blocks=8") == (["provider", "max_blocks"], 8)
    assert parse_override("provider.account=null") == (["provider", "account"], None)
    assert parse_override("provider.exclusive=false") == (["provider", "exclusive"], False)
    assert parse_override("provider.init_cpu=0.5") == (["provider", "init_cpu"], 0.5)
    assert parse_override("image=ghcr.io/x/y:1.0") == (["image"], "ghcr.io/x/y:1.0")
    assert parse_override("worker_init=") == (["worker_init"], "")
    # YAML 1.1 would read these as base-60 integers (7200, 5400)
    assert parse_override("provider.walltime=2:00:00") == (["provider", "walltime"], "2:00:00")
    assert parse_override("provider.walltime=90:00") == (["provider", "walltime"], "90:00")


@pytest.mark.parametrize("text", ["max_blocks", "=8", "provider..max_blocks=1", "provider.max blocks=1", "x=[1"])
def test_parse_override_refuses_malformed(text: str) -> None:
    with pytest.raises(SiteConfigError, match="--set"):
        parse_override(text)


def test_overrides_apply_before_validation() -> None:
    site = load_site(
        "river",
        overrides=["provider.max_blocks=8", "provider.walltime=2:30:00", "container.options=--nv", "engine.options.heartbeat_period=15"],
    )
    assert site.provider.max_blocks == 8
    assert site.provider.walltime == "2:30:00" and site.provider.walltime_minutes() == 150
    assert site.container is not None and site.container.options == "--nv"
    assert site.engine.options == {"heartbeat_period": 15}
    assert load_site("river").provider.max_blocks == 4  # the file is untouched


def test_override_creates_a_missing_section() -> None:
    site = load_site("slurm", overrides=["container.type=apptainer", "image=/images/worker.sif"])
    assert site.container is not None and site.container.type == "apptainer"


def _refused(name: str, *overrides: str) -> str:
    with pytest.raises(SiteConfigError) as info:
        load_site(name, overrides=overrides)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert f"site {name!r}" in message and str(shipped_sites_dir() / f"{name}.yaml") in message
    return message


def test_typo_in_override_key_names_site_and_field() -> None:
    message = _refused("river", "provider.max_blokcs=8")
    assert "provider.max_blokcs = 8 (from --set)" in message
    assert "Extra inputs are not permitted" in message


def test_wrong_type_names_field_and_value() -> None:
    message = _refused("river", "provider.max_blocks=four")
    assert "provider.max_blocks = 'four' (from --set)" in message and "integer" in message


def test_unknown_provider_lists_the_known_ones() -> None:
    message = _refused("river", "provider.type=SlurmProvidr")
    assert "provider.type = 'SlurmProvidr'" in message
    assert all(name in message for name in PROVIDER_FAMILIES)


def test_field_of_another_provider_is_refused() -> None:
    assert "provider.queue = 'debug'" in _refused("river", "provider.queue=debug")  # PBS's word for partition


def test_kubernetes_init_blocks_must_be_zero() -> None:
    message = _refused("kubernetes", "provider.init_blocks=2")
    assert "provider.init_blocks = 2 (from --set): must be 0 on Kubernetes" in message


def test_kubernetes_image_belongs_to_the_pod_not_a_container() -> None:
    message = _refused("kubernetes", "container.type=apptainer")
    assert "container.type = 'apptainer'" in message and "KubernetesProvider" in message
    assert "image = None" in _refused("kubernetes", "image=null")


def test_image_and_container_go_together() -> None:
    assert "container = None (from --set)" in _refused("river", "container=null")
    assert "image = None" in _refused("slurm", "container.type=apptainer")


def test_blocks_must_fit_in_max_blocks() -> None:
    assert "provider.init_blocks = 9 (from --set): init_blocks (9) exceeds max_blocks (4)" in _refused("river", "provider.init_blocks=9")
    assert "provider.min_blocks = 5" in _refused("river", "provider.min_blocks=5")
    assert "provider.max_blocks = 0" in _refused("river", "provider.max_blocks=0")


def test_options_cannot_shadow_what_faasctl_writes() -> None:
    assert "provider.options.max_blocks = 3 (from --set): faasctl sets max_blocks itself: use provider.max_blocks" in _refused(
        "river", "provider.options.max_blocks=3"
    )
    assert "use worker_init" in _refused("river", "provider.options.worker_init=x")
    assert "engine.options.container_uri = 'x' (from --set): faasctl sets container_uri itself: use image" in _refused(
        "river", "engine.options.container_uri=x"
    )


def test_address_or_interface_not_both() -> None:
    assert "engine.interface = 'lo'" in _refused("local", "engine.interface=lo")


@pytest.mark.parametrize("walltime", ["2h", "01:60:00", "1:2:3:4"])
def test_walltime_format(walltime: str) -> None:
    assert "expected [D-]HH:MM:SS" in _refused("river", f"provider.walltime={walltime}")


def test_walltime_minutes() -> None:
    for walltime, minutes in [("01:00:00", 60), ("00:30:30", 31), ("1-02:00:00", 1560), ("45:00", 45)]:
        assert load_site("river", overrides=[f"provider.walltime={walltime}"]).provider.walltime_minutes() == minutes


def test_invalid_site_name(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: My Site\nprovider: {type: LocalProvider}\n")
    with pytest.raises(SiteConfigError, match=r"site 'My Site' \(.*x.yaml\): name = 'My Site': use lowercase"):
        load_site("", site_file=path)
    assert load_site("river", overrides=["name=river-gpu"]).name == "river-gpu"  # render a variant under its own name


def test_unknown_site_lists_the_known_ones() -> None:
    with pytest.raises(SiteConfigError, match=r"unknown site 'nope'; known sites: .*river"):
        load_site("nope")


def test_admin_folder_adds_and_shadows_sites(no_admin_sites: Path) -> None:
    river = yaml.safe_load((shipped_sites_dir() / "river.yaml").read_text())
    (no_admin_sites / "river.yaml").write_text(yaml.safe_dump(river | {"description": "our RIVER"}))
    (no_admin_sites / "mycluster.yaml").write_text(yaml.safe_dump(river | {"name": "mycluster"}))
    assert site_paths()["river"] == no_admin_sites / "river.yaml"
    assert "mycluster" in list_sites()
    assert load_site("river").description == "our RIVER"
    assert load_site("mycluster").source == str(no_admin_sites / "mycluster.yaml")


def test_default_admin_folder_is_under_xdg_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FAASCTL_SITES_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_sites_dirs() == [tmp_path / "faasctl" / "sites"]


def test_admin_file_must_match_its_name(no_admin_sites: Path) -> None:
    (no_admin_sites / "alpha.yaml").write_text("name: beta\nprovider: {type: LocalProvider}\n")
    with pytest.raises(SiteConfigError, match=r"alpha.yaml: names site 'beta'"):
        load_site("alpha")


def test_site_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("provider:\n  type: LocalProvider\n  max_blocks: 2\n")
    site = load_site("", site_file=path)
    assert (site.name, site.provider.max_blocks, site.source) == ("mine", 2, str(path))
    assert load_site("mine", site_file=path, overrides=["provider.max_blocks=1"]).provider.max_blocks == 1
    assert load_site("other", site_file=path).name == "other"  # a file without name: takes the given one
    path.write_text("name: mine\nprovider:\n  type: LocalProvider\n")
    with pytest.raises(SiteConfigError, match="describes site 'mine', not 'river'"):
        load_site("river", site_file=path)


def test_site_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("provider: {type: SlurmProvider, max_blocks: [\n")
    with pytest.raises(SiteConfigError, match=f"site file {re.escape(str(path))}: not valid YAML"):
        load_site("", site_file=path)
    path.write_text("- a list\n")
    with pytest.raises(SiteConfigError, match="expected a mapping"):
        load_site("", site_file=path)
    path.write_text("provider: {type: SlurmProvider, partiton: short}\n")
    with pytest.raises(SiteConfigError, match=rf"site 'bad' \({re.escape(str(path))}\): provider.partiton = 'short': Extra inputs"):
        load_site("", site_file=path)
    with pytest.raises(SiteConfigError, match="cannot read it"):
        load_site("", site_file=tmp_path / "missing.yaml")


def test_unquoted_walltime_in_a_site_file_stays_a_string(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("provider: {type: SlurmProvider, walltime: 2:00:00}\n")
    assert load_site("", site_file=path).provider.walltime == "2:00:00"


def test_site_record_is_a_plain_model() -> None:
    """Built in code (no file), a record validates the same way and has no source."""
    site = SiteRecord.model_validate({"name": "x", "provider": {"type": "LocalProvider"}})
    assert site.source is None and site.family == "local"


# ---------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_sites_list() -> None:
    result = runner.invoke(app, ["sites", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == SHIPPED
    river = next(row for row in rows if row["name"] == "river")
    assert river == {"name": "river", "provider": "SlurmProvider", "description": load_site("river").description, "source": "shipped"}
    plain = runner.invoke(app, ["sites", "list"])
    assert plain.exit_code == 0 and f"river\tSlurmProvider\t{river['description']}" in plain.stdout


def test_cli_sites_list_shows_an_invalid_admin_site(no_admin_sites: Path) -> None:
    (no_admin_sites / "broken.yaml").write_text("provider: {type: Nope}\n")
    result = runner.invoke(app, ["sites", "list", "--json"])
    assert result.exit_code == 0
    broken = next(row for row in json.loads(result.stdout) if row["name"] == "broken")
    assert broken["provider"] == "invalid" and "provider.type = 'Nope'" in broken["description"]


def test_cli_sites_show() -> None:
    result = runner.invoke(app, ["sites", "show", "river", "--set", "provider.max_blocks=8", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["provider"]["max_blocks"] == 8 and data["name"] == "river"
    plain = runner.invoke(app, ["sites", "show", "polaris"])
    assert plain.exit_code == 0
    assert yaml.safe_load(plain.stdout) == load_site("polaris").model_dump(mode="json")


def test_cli_sites_show_refuses_a_typo_with_exit_2() -> None:
    result = runner.invoke(app, ["sites", "show", "river", "--set", "provider.max_blokcs=8"])
    assert result.exit_code == 2
    assert "site 'river'" in result.output and "provider.max_blokcs = 8 (from --set)" in result.output
