"""One pinned stack (faasctl.stack): where the pins live, and the check before fitting."""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLE, ROOT
from packaging.requirements import Requirement
from typer.testing import CliRunner

from faasctl import __version__
from faasctl.cli.main import app
from faasctl.exceptions import StackMismatch
from faasctl.pallets.load import load_pallet
from faasctl.scan.client import FitClient
from faasctl.sites import load_site, shipped_sites_dir
from faasctl.stack import BREAKING, PINS, PYTHON, WORKER_VERSION_ENV, compare, environment

runner = CliRunner()


# --- one place: the project, the images and the sites take the pins from faasctl.stack -------------


def _python311_pins(lock: Path) -> dict[str, str]:
    """name -> version of a universal lock, for the images' Python (entries whose marker admits it)."""
    pins = {}
    for entry in re.split(r"\n(?=\S)", lock.read_text()):
        line = entry.split("\\")[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"python_full_version": f"{PYTHON}.0", "python_version": PYTHON}):
            pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    return pins


def test_the_installed_stack_is_the_pinned_one() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON
    assert {name: metadata.version(name) for name in PINS} == PINS


def test_pyproject_pins_the_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__ == PINS["faasctl"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["jax"]]
    pinned = {r.name: str(r.specifier) for r in requirements}
    for name, version in PINS.items():
        if name != "faasctl":
            assert pinned.get(name) == f"=={version}", f"pyproject.toml: {name} should be =={version} (faasctl.stack.PINS)"


@pytest.mark.parametrize("flavor", ["cpu", "cuda"])
def test_image_locks_and_python_are_the_stack(flavor: str) -> None:
    locked = _python311_pins(ROOT / "images" / flavor / "requirements.lock")
    for name, version in PINS.items():
        if name != "faasctl":  # the image installs the faasctl wheel it is built from
            assert locked.get(name) == version, f"images/{flavor}/requirements.lock: {name} {locked.get(name)} != {version}"
    python = f"ARG BASE_IMAGE=python:{PYTHON}-slim"  # both flavors: one base, one Python
    assert python in (ROOT / "images" / flavor / "Dockerfile").read_text().splitlines()
    assert f"--python-version {PYTHON}" in (ROOT / "images" / "lock.sh").read_text()


def test_requirements_in_pins_the_stack() -> None:
    text = (ROOT / "images" / "cpu" / "requirements.in").read_text()
    pins = {Requirement(line).name: str(Requirement(line).specifier) for line in text.splitlines() if line and not line.startswith(("#", "-r"))}
    for name in ("pyhf", "globus-compute-endpoint", "globus-compute-sdk", "parsl", "dill", "jax"):
        assert pins[name] == f"=={PINS[name]}", name


def test_shipped_worker_images_and_chart_are_this_faasctl() -> None:
    for path in shipped_sites_dir().glob("*.yaml"):
        image = load_site(path.stem).image
        if image:
            assert image.rsplit(":", 1)[1].startswith(f"{PINS['faasctl']}-"), f"{path.name}: {image} is not faasctl {PINS['faasctl']}"
    chart = yaml.safe_load((ROOT / "helm" / "faasctl-endpoint" / "Chart.yaml").read_text())
    assert chart["appVersion"] == PINS["faasctl"]


# --- compare ---------------------------------------------------------------------------------------


def test_same_environment_has_no_differences() -> None:
    assert compare(environment(), environment()) == ([], [])


@pytest.mark.parametrize("key", sorted(BREAKING))
def test_differences_that_break_results_are_errors(key: str) -> None:
    client = environment()
    worker = {**client, key: "3.10.4" if key == "python" else "0.0.1"}
    errors, warnings = compare(worker, client)
    assert len(errors) == 1 and errors[0].startswith(f"{key} ") and BREAKING[key] in errors[0]
    assert warnings == []


def test_python_patch_level_does_not_matter_but_the_minor_does() -> None:
    client = {**environment(), "python": "3.11.9"}
    assert compare({**client, "python": "3.11.2"}, client) == ([], [])
    errors, _ = compare({**client, "python": "3.12.1"}, client)
    assert errors == ["python 3.12 on the worker, 3.11 here (tasks are pickled (dill) and pickles do not cross Python minors)"]


def test_other_differences_warn() -> None:
    client = environment()
    errors, warnings = compare({**client, "parsl": "2026.1.1", "jax": None}, client)
    assert errors == []
    assert warnings == [
        f"parsl 2026.1.1 on the worker, {client['parsl']} here; the stack pins {PINS['parsl']}",
        f"jax missing on the worker, {client['jax']} here; the stack pins {PINS['jax']}",
    ]
    old_worker = {k: v for k, v in client.items() if k != "dill"}
    assert compare(old_worker, client) == ([], ["dill: not reported by the worker (faasctl there predates the stack check)"])


# --- before fitting ----------------------------------------------------------------------------------


def test_fitclient_refuses_a_worker_with_another_faasctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_VERSION_ENV, "9.9.9")
    pallet = load_pallet(EXAMPLE)
    fitted = []
    with cf.ThreadPoolExecutor(2) as ex:  # in-process workers: the variable reaches them
        client = FitClient(ex, backend="numpy", function=lambda task: fitted.append(task) or {})
        with pytest.raises(StackMismatch, match=rf"faasctl 9\.9\.9 on the worker, {re.escape(__version__)} here") as info:
            list(client.scan(pallet))
    assert fitted == [] and info.value.exit_code == 2
    monkeypatch.delenv(WORKER_VERSION_ENV)
    with cf.ThreadPoolExecutor(2) as ex:
        (result,) = FitClient(ex, backend="numpy").scan(pallet, [next(iter(pallet.patches))])
    assert result.ok


def test_local_workers_are_not_asked_for_their_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local engine's workers run this interpreter: no question before the fits (it would queue behind
    their start-up), while an executor whose workers may differ is asked by default."""
    from faasctl.executors.local import local_executor

    monkeypatch.setenv(WORKER_VERSION_ENV, "9.9.9")  # what a worker would report: the local engine is not asked
    pallet = load_pallet(EXAMPLE)
    with local_executor(1, warm=None) as ex:
        (result,) = FitClient(ex, backend="numpy").scan(pallet, [next(iter(pallet.patches))])
    assert result.ok
    with cf.ThreadPoolExecutor(1) as ex:
        assert FitClient(ex).check_stack and not FitClient(ex, check_stack=False).check_stack


def test_a_worker_that_cannot_answer_is_let_through(caplog: pytest.LogCaptureFixture) -> None:
    """No answer within the client's timeout: warn and fit (the fits then report the problem per patch)."""
    import threading

    from faasctl.stack import check_worker

    release = threading.Event()
    with cf.ThreadPoolExecutor(1) as ex:
        ex.submit(release.wait)  # the only worker is busy
        assert check_worker(ex, timeout=0.05) == []
        release.set()
    assert "could not ask a worker for its versions (TimeoutError" in caplog.text
    ex.shutdown()
    assert check_worker(ex) == []  # a shut-down executor: the fits raise ScanError for it


def test_check_local_refuses_a_worker_with_another_faasctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """`faasctl check --site local`: the real local workers inherit the variable and report 9.9.9."""
    monkeypatch.setenv(WORKER_VERSION_ENV, "9.9.9")
    result = runner.invoke(app, ["check", "--site", "local", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["worker"]["faasctl"] == "9.9.9"
    first, *fits = report["checks"]
    assert first["name"] == "worker_info" and first["status"] == "fail"
    assert f"faasctl 9.9.9 on the worker, {__version__} here (defines the task and result records)" in first["message"]
    assert [c["status"] for c in fits] == ["skipped"] * len(fits)
    assert "worker and client differ: faasctl 9.9.9 on the worker" in " ".join(result.stderr.split())
