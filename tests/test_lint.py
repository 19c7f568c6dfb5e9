"""The site lint: each facility / Globus Compute rule catches a record that breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.exceptions import SiteConfigError
from faasctl.sites import load_site, shipped_sites_dir
from faasctl.sites.lint import RULES, check_site, lint_site
from faasctl.sites.render import render_endpoint

SHIPPED = sorted(p.stem for p in shipped_sites_dir().glob("*.yaml"))
UUID = "11111111-2222-4333-8444-555555555555"

#: rule -> (site, --set overrides that break only that rule, the field the error names)
BROKEN: dict[str, tuple[str, list[str], str]] = {
    "batch-cmd-timeout": ("slurm", ["provider.cmd_timeout=10"], "provider.cmd_timeout"),
    "k8s-unencrypted": ("kubernetes", ["engine.options.encrypted=true"], "engine.options.encrypted"),
    "k8s-non-root": ("kubernetes", ["provider.run_as_non_root=false"], "provider.run_as_non_root"),
    "k8s-not-privileged": (
        "kubernetes", ["endpoint.privileged=true", "endpoint.email=a@b.org", "endpoint.identity_mapping_config_path=/etc/idmap.json"],
        "endpoint.privileged",
    ),
    "privileged-email": ("river", ["endpoint.privileged=true", "endpoint.identity_mapping_config_path=/etc/idmap.json"], "endpoint.email"),
    "privileged-identity-mapping": ("river", ["endpoint.privileged=true", "endpoint.email=a@uchicago.edu"], "endpoint.identity_mapping"),
    "high-assurance": ("local", ["endpoint.high_assurance=true", f"endpoint.authentication_policy={UUID}"], "endpoint.subscription_id"),
    "admins-subscription": ("local", [f"endpoint.admins=[{UUID}]"], "endpoint.subscription_id"),
    "polaris-hsn0": ("polaris", ["engine.interface=bond0"], "engine.interface"),
    "polaris-tmpdir": ("polaris", ["worker_init=module load apptainer\nexport HTTPS_PROXY=p\nexport https_proxy=p"], "worker_init"),
    "polaris-system": ("polaris", ["provider.select_options=ngpus=4"], "provider.select_options"),
    "polaris-queue": ("polaris", ["provider.queues=[prod, demand]"], "provider.queues"),
    "polaris-account": ("polaris", ["provider.account_required=false"], "provider.account_required"),
    "polaris-fakeroot": ("polaris", ["container.options=--nv"], "container.options"),
    "polaris-proxy": ("polaris", ["worker_init=export TMPDIR=/tmp"], "worker_init"),
    "perlmutter-hsn0": ("perlmutter", ["engine.interface=ib0"], "engine.interface"),
    "perlmutter-srun-cpus": ("perlmutter", ["provider.launcher.overrides=--cpu-bind=none"], "provider.launcher.overrides"),
    "perlmutter-cmd-timeout": ("perlmutter", ["provider.cmd_timeout=60"], "provider.cmd_timeout"),
    "perlmutter-containers": (
        "perlmutter", ["image=ghcr.io/faasctl/faasctl-worker:0.1.0-cpu", "container.type=apptainer"], "container.type",
    ),
    "expanse-account": ("expanse", ["provider.account_required=false"], "provider.account_required"),
    "expanse-ib0": ("expanse", ["engine.interface=eth0"], "engine.interface"),
}


@pytest.fixture(autouse=True)
def no_admin_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "admin-sites"
    folder.mkdir()
    monkeypatch.setenv("FAASCTL_SITES_DIR", str(folder))


def test_every_rule_has_a_broken_record() -> None:
    assert sorted(BROKEN) == sorted(rule.id for rule in RULES)
    assert all(rule.source for rule in RULES)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sites_follow_every_rule(name: str) -> None:
    assert lint_site(load_site(name)) == []


@pytest.mark.parametrize("rule_id", sorted(BROKEN))
def test_rule_catches_a_broken_record(rule_id: str) -> None:
    name, overrides, field = BROKEN[rule_id]
    site = load_site(name, overrides=overrides)
    violations = lint_site(site)
    assert [v.rule for v in violations] == [rule_id]  # that rule, and only that one
    rule = next(r for r in RULES if r.id == rule_id)
    with pytest.raises(SiteConfigError) as info:
        render_endpoint(site)  # the lint runs at render time
    message = str(info.value)
    assert "\n" not in message
    assert f"site {name!r}" in message and f"rule {rule_id}: {field} = " in message
    assert f"(source: {rule.source})" in message
    assert info.value.exit_code == 2


def test_rules_follow_the_facility_not_the_name() -> None:
    """An admin's copy of polaris under another name keeps Polaris' rules; river has none of them."""
    copy = load_site("polaris", overrides=["name=polaris-gpu", "engine.interface=bond0"])
    assert [v.rule for v in lint_site(copy)] == ["polaris-hsn0"]
    assert lint_site(load_site("river", overrides=["engine.interface=bond0"])) == []
    assert [v.rule for v in lint_site(load_site("river", overrides=["facility=polaris"]))][:1] == ["polaris-hsn0"]


def test_several_broken_rules_in_one_line() -> None:
    site = load_site("polaris", overrides=["engine.interface=bond0", "provider.cmd_timeout=5"])
    with pytest.raises(SiteConfigError, match=r"rule batch-cmd-timeout: .*; rule polaris-hsn0: ") as info:
        check_site(site)
    assert "\n" not in str(info.value)


def test_cli_render_exits_2_naming_the_rule(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["render", "--site", "polaris", "--set", "engine.interface=bond0", "--out", str(tmp_path / "ep")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "rule polaris-hsn0: engine.interface = 'bond0'" in text and "docs/endpoints/configs/polaris.yaml" in text
    assert not (tmp_path / "ep").exists()
