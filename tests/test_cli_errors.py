"""The CLI's error paths: user strings printed as given, reports written even on failure, one exit-code table."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faasctl.exceptions as exceptions
from faasctl.cli.main import app

runner = CliRunner()

MARKUP = "mk[/red]"


@pytest.fixture
def marked_pallet(tmp_path, example_pallet) -> Path:
    """The example pallet in a folder whose path holds rich markup."""
    target = tmp_path / MARKUP / "pallet[bold]"
    shutil.copytree(example_pallet, target)
    return target


def test_markup_in_paths_is_printed_as_given(marked_pallet, tmp_path):
    result = runner.invoke(app, ["fit", str(marked_pallet), "-p", "nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert f"{MARKUP}/pallet[bold]" in " ".join(result.output.split()).replace(" ", "")  # not parsed as markup
    inspected = runner.invoke(app, ["pallet", "inspect", str(marked_pallet)])
    assert inspected.exit_code == 0, inspected.output
    assert "pallet[bold]" in inspected.output


def test_check_json_writes_the_report_when_the_service_cannot_be_reached(monkeypatch):
    """A real Globus SDK with a made-up client identity: the service refuses it, or cannot be reached (no network)."""
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", "2f9c4f1e-0b7a-4d0e-9a52-6f3c1d2e8b7a")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "not-a-secret")
    result = runner.invoke(app, ["check", "--endpoint", "2f9c4f1e-0b7a-4d0e-9a52-6f3c1d2e8b7a", "--json"])
    assert result.exit_code in (1, 2), result.output
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert report["healthy"] is False and report["target"] == "endpoint 2f9c4f1e-0b7a-4d0e-9a52-6f3c1d2e8b7a"
    assert [c["status"] for c in report["checks"]] == ["error"] and report["checks"][0]["message"]


def test_every_error_exits_with_a_documented_code():
    """Each FaasctlError's exit code is in the table of docs/exit-codes.md (0, 1, 2, 130), and the table lists them."""
    table = (Path(__file__).parents[1] / "docs" / "exit-codes.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| `(\d+)` \|", table, flags=re.M)}
    assert documented == {0, 1, 2, 130}
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert cls.exit_code in (1, 2), (name, cls.exit_code)
        assert f"`{name}`" in table, f"{name} is not in docs/exit-codes.md"


def test_site_file_with_yaml_aliases_is_refused_in_one_short_line(tmp_path):
    """Nested aliases ("billion laughs") would expand to a huge value, and a huge error line."""
    path = tmp_path / "laughs.yaml"
    lines = ["name: laughs", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["render", "--site-file", str(path), "--print"])
    assert result.exit_code == 2, result.output[:500]
    message = " ".join(result.output.split())
    assert "not valid YAML: line 3 column 10: alias *l0: site files may not use aliases" in message
    assert len(result.output) < 500


def test_multi_line_yaml_error_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nprovider:\n  type: [unclosed\n  other: 1\n")
    from faasctl.exceptions import SiteConfigError
    from faasctl.sites import load_site

    with pytest.raises(SiteConfigError) as excinfo:
        load_site("", site_file=path)
    assert str(excinfo.value) == f"site file {path}: not valid YAML: line 4 column 8: expected ',' or ']', but got ':'"


def test_direct_mode_without_a_scheduler_fails_once_naming_it(example_pallet, tmp_path, monkeypatch):
    """No sbatch on PATH (a real absence, not a stub): one error naming Slurm, before any block or patch."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["fit", str(example_pallet), "--site", "slurm", "--direct", "--out", str(tmp_path / "o"),
                                 "--no-plot"])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "error: site 'slurm': Slurm is not available here: sbatch, squeue, scancel not found on PATH" in message
    assert "failed" not in message.replace("error:", "")  # no patch recorded as failed
    from faasctl.scan.results import load_results

    assert load_results(tmp_path / "o") == {}


@pytest.mark.slurm
def test_scheduler_check_passes_where_slurm_answers():
    from faasctl.executors.site import check_scheduler, site_config
    from faasctl.sites import load_site

    if shutil.which("squeue") is None:
        pytest.skip("no Slurm here (.ci/slurm-up.sh)")
    site = load_site("slurm")
    check_scheduler(site, site_config(site).executors[0].provider)


def test_ctrl_c_in_any_command_exits_130(monkeypatch, example_pallet):
    """click turns KeyboardInterrupt into "Aborted!" and status 1; faasctl's table says 130."""
    import faasctl.pallets.load

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(faasctl.pallets.load, "load_pallet", interrupted)
    result = runner.invoke(app, ["pallet", "inspect", str(example_pallet)])
    assert result.exit_code == 130, result.output
    assert "Interrupted." in result.output and "Traceback" not in result.output
