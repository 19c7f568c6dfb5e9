"""Worker images from build to scheduler: references, `faasctl image push`, container command lines, and the
whole path on real parts.

End to end (marked docker, slurm, slow) on this machine: the CPU image built once per session
(conftest ``cpu_image``) is pushed with ``faasctl image push`` to a real OCI registry on 127.0.0.1
(.ci/registry-up.sh: Debian's docker-registry), then

- a Slurm job of direct mode pulls it by digest with podman (.ci/podman-setup.sh) and runs the worker
  pools in it: the CLs equal plain pyhf's;
- Globus Compute's own engine (``GlobusComputeEngine``), given the container settings of the rendered
  endpoint config, runs its worker pool in the same image: the CLs equal plain pyhf's.

Apptainer and Singularity are not packaged for Debian 12: their command lines are checked as rendered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLE, require
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.exceptions import DeployError, ImageReferenceError
from faasctl.executors.site import check_worker_image, site_config
from faasctl.images.containers import check_image, worker_container_options
from faasctl.images.registry import ImageRef, is_pinned, parse_reference
from faasctl.pallets.load import load_pallet
from faasctl.sites import load_site
from faasctl.sites.render import load_endpoint_config, render_endpoint
from faasctl.study import agrees, pyhf_hypotest

runner = CliRunner()
DIGEST = "sha256:" + "0123456789abcdef" * 4
PINNED = f"127.0.0.1:5055/faasctl-worker@{DIGEST}"
#: How Globus Compute's engine starts a worker pool (inside the container: the image's installation).
WORKER_POOL = ["globus-compute-endpoint", "python-exec", "parsl.executors.high_throughput.process_worker_pool"]


def _site(container_type: str, image: str, options: str = "") -> Any:
    overrides = [f"container.type={container_type}", f"image={image}", "provider.walltime=00:10:00"]
    if options:
        overrides.append(f"container.options={options}")
    return load_site("slurm", overrides=overrides)


# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ref"), [
    ("faasctl-worker:0.1.0-cpu", ImageRef("faasctl-worker", "0.1.0-cpu")),
    ("127.0.0.1:5055/faasctl-worker", ImageRef("127.0.0.1:5055/faasctl-worker")),
    (PINNED, ImageRef("127.0.0.1:5055/faasctl-worker", None, DIGEST)),
    (f"ghcr.io/hep/faasctl-worker:0.1.0@{DIGEST}", ImageRef("ghcr.io/hep/faasctl-worker", "0.1.0", DIGEST)),
    ("docker://ghcr.io/hep/w:1", ImageRef("ghcr.io/hep/w", "1")),
])
def test_reference_parses(text, ref):
    assert parse_reference(text) == ref
    assert str(ref) == text.removeprefix("docker://")


@pytest.mark.parametrize(("text", "why"), [
    ("Faasctl-Worker:1", "repository names are lowercase"),
    ("faasctl worker", "is not an image reference"),
    ("registry/name@sha256:abc", "is not an image reference"),
    ("name:", "is not an image reference"),
])
def test_malformed_reference_says_why(text, why):
    with pytest.raises(ImageReferenceError, match=why):
        parse_reference(text)


def test_pinned_means_fixed_content():
    assert is_pinned(PINNED) and is_pinned(f"docker://{PINNED}")
    assert is_pinned("sha256:" + "ab" * 32)  # an engine's image id
    assert is_pinned("/scratch/images/faasctl-worker.sif")
    for moving in ("faasctl-worker:0.1.0-cpu", "ghcr.io/hep/faasctl-worker", "docker://ghcr.io/hep/w:latest"):
        assert not is_pinned(moving), moving


# --- container command lines ---------------------------------------------------------------------


def test_docker_like_runtimes_get_host_network_and_the_callers_uid():
    assert worker_container_options("podman") == "--rm --network host --user $(id -u):$(id -g)"
    assert worker_container_options("docker", "--env A=1") == "--rm --network host --user $(id -u):$(id -g) --env A=1"
    assert worker_container_options("podman-hpc") == "--rm --network host"  # maps the calling user itself
    # The site's own choices win, and adding twice changes nothing.
    assert worker_container_options("podman", "--rm --net=slirp4netns --userns keep-id") == "--rm --net=slirp4netns --userns keep-id"
    once = worker_container_options("podman", "--env A=1")
    assert worker_container_options("podman", once) == once
    for runtime in ("apptainer", "singularity"):  # host network and the caller's uid already
        assert worker_container_options(runtime, "--nv") == "--nv"


def _launch(site: Any, tmp_path: Path) -> list[str]:
    """The worker-pool command of the site's blocks in direct mode, split as the shell will split it."""
    htex = site_config(site, run_dir=tmp_path).executors[0]
    return htex.launch_cmd.split()


@pytest.mark.parametrize("runtime", ["podman", "docker", "podman-hpc"])
def test_docker_like_launch_command(runtime, tmp_path):
    words = _launch(_site(runtime, PINNED, "--env FAASCTL_X=1"), tmp_path)
    run = words[: words.index(PINNED) + 1]
    user = ["--user", "$(id", "-u):$(id", "-g)"] if runtime != "podman-hpc" else []
    assert run == [runtime, "run", "--rm", "--network", "host", *user, "--env", "FAASCTL_X=1",
                   "-v", f"{tmp_path}:{tmp_path}", "-t", PINNED]
    assert words[len(run):][:3] == WORKER_POOL  # the image's own globus-compute-endpoint and parsl


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_apptainer_launch_command(runtime, tmp_path):
    words = _launch(_site(runtime, PINNED, "--bind /scratch"), tmp_path)
    assert words[:8] == [runtime, "run", "--bind", "/scratch", f"docker://{PINNED}", *WORKER_POOL]
    sif = tmp_path / "faasctl-worker.sif"
    words = _launch(_site(runtime, str(sif)), tmp_path)
    assert words[:6] == [runtime, "run", str(sif), *WORKER_POOL]


def test_rendered_config_carries_the_container_settings():
    site = _site("podman", PINNED, "--env A=1")
    files = render_endpoint(site)
    engine = yaml.safe_load(_pass2(files))["engine"]
    assert engine["container_type"] == "podman"
    assert engine["container_uri"] == PINNED
    assert engine["container_cmd_options"] == "--rm --network host --user $(id -u):$(id -g) --env A=1"
    built = load_endpoint_config(files, site=site).engine
    assert (built.container_type, built.container_uri) == ("podman", PINNED)


def _pass2(files: Any) -> str:
    """The user config as the endpoint renders it for a user who sends no options."""
    import jinja2

    return jinja2.Environment().from_string(files["user_config_template.yaml.j2"]).render()


# --- direct mode refuses a moving tag and checks the image before submitting --------------------


def test_direct_mode_refuses_a_moving_tag(tmp_path):
    with pytest.raises(ImageReferenceError, match=r"site 'slurm': image ghcr.io/hep/w:1 is a moving tag; .* NAME@sha256"):
        check_worker_image(_site("podman", "ghcr.io/hep/w:1"))
    result = runner.invoke(app, ["fit", str(EXAMPLE), "--site", "slurm", "--direct", "--set", "container.type=podman",
                                 "--set", "image=ghcr.io/hep/w:1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "image ghcr.io/hep/w:1 is a moving tag" in result.output and "Traceback" not in result.output


def test_missing_sif_is_named(tmp_path):
    sif = tmp_path / "faasctl-worker.sif"
    with pytest.raises(DeployError, match=f"image {sif}: no such file"):
        check_image("apptainer", str(sif))
    sif.write_bytes(b"")
    assert check_image("apptainer", str(sif)) == f"{sif} exists"
    assert "pulled by singularity in each block" in check_image("singularity", f"docker://{PINNED}")


# --- faasctl image push ---------------------------------------------------------------------------


@pytest.mark.parametrize(("dest", "why"), [
    ("Bad Ref", "is not an image reference"),
    (PINNED, "push to a tag, not a digest"),
])
def test_push_bad_destination_exits_2(dest, why):
    result = runner.invoke(app, ["image", "push", "faasctl-worker:pytest-cpu", dest])
    assert result.exit_code == 2, result.output
    assert why in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_push_without_engine_is_one_line(tmp_path, monkeypatch):
    socket = f"unix://{tmp_path}/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)
    result = runner.invoke(app, ["image", "push", "faasctl-worker:pytest-cpu", "127.0.0.1:5055/faasctl-worker:1"])
    assert result.exit_code == 1, result.output
    assert f"error: no Docker engine at DOCKER_HOST={socket}" in result.output


@pytest.fixture(scope="session")
def base_image() -> str:
    """The small local base image of .ci/docker-up.sh, for push tests that need no worker image."""
    from faasctl.exceptions import ImageBuildError
    from faasctl.images import docker_client

    try:
        client = docker_client()
    except ImageBuildError as err:
        require(False, f"a Docker engine (.ci/docker-up.sh): {err}")
    base = os.environ.get("FAASCTL_BASE_IMAGE", "local/bookworm-python:ci")
    require(bool(client.images.list(name=base)), f"the base image {base} (.ci/docker-up.sh)")
    return base


def _registry_digest(registry: str, name: str, tag: str) -> str:
    """The digest the registry itself reports for NAME:TAG (distribution API)."""
    request = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
    })
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Docker-Content-Digest"]


@pytest.mark.docker
def test_push_prints_the_registrys_digest(base_image, registry):
    result = runner.invoke(app, ["image", "push", "-q", base_image, f"{registry}/faasctl-ci/base:pytest"])
    assert result.exit_code == 0, result.output
    pinned = result.output.strip()
    assert pinned == f"{registry}/faasctl-ci/base@{_registry_digest(registry, 'faasctl-ci/base', 'pytest')}"
    assert is_pinned(pinned)


@pytest.mark.docker
def test_push_to_a_registry_that_is_down_names_it(base_image):
    result = runner.invoke(app, ["image", "push", base_image, "127.0.0.1:9/faasctl-ci/base:pytest"])
    assert result.exit_code == 1, result.output
    assert "the registry 127.0.0.1:9 does not answer" in result.output and "Traceback" not in result.output


# --- podman against the registry -----------------------------------------------------------------


@pytest.fixture(scope="session")
def podman() -> str:
    """podman configured by .ci/podman-setup.sh (runc, loopback registry over HTTP)."""
    tool = shutil.which("podman")
    ok = tool is not None and subprocess.run([tool, "info"], capture_output=True, timeout=60).returncode == 0
    require(ok, "podman (.ci/podman-setup.sh)")
    return tool


@pytest.fixture(scope="session")
def pushed_base(base_image, registry) -> str:
    result = runner.invoke(app, ["image", "push", "-q", base_image, f"{registry}/faasctl-ci/base:pytest"])
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.mark.docker
def test_image_check_fails_fast_naming_the_image(podman, pushed_base, registry):
    subprocess.run([podman, "image", "rm", "--force", pushed_base], capture_output=True, timeout=60)
    assert check_image("podman", pushed_base) == f"{pushed_base} is in its registry"  # nothing pulled
    wrong = re.sub(r"sha256:\w+", DIGEST, pushed_base)
    with pytest.raises(DeployError, match=rf"image {re.escape(wrong)} cannot be pulled with podman: .*manifest unknown"):
        check_image("podman", wrong)
    down = f"127.0.0.1:9/faasctl-ci/base@{DIGEST}"
    with pytest.raises(DeployError, match=rf"image {re.escape(down)} cannot be pulled with podman: .*connection refused"):
        check_image("podman", down)


# --- the whole path: build, push, pull by digest in a Slurm job, fit in podman containers --------


@pytest.fixture(scope="session")
def pushed_worker(cpu_image, registry) -> str:
    """The session's CPU worker image in the local registry, as NAME@sha256:..."""
    start = time.perf_counter()
    result = runner.invoke(app, ["image", "push", "-q", cpu_image.tag, f"{registry}/faasctl-worker:pytest-cpu"])
    assert result.exit_code == 0, result.output
    print(f"pushed in {time.perf_counter() - start:.0f} s")  # shown with -rP
    return result.output.strip()


@pytest.fixture
def worker_containers(podman, pushed_worker):
    """Removes the test's worker containers after it.

    A block killed by the scheduler (or an engine shut down) leaves its podman container running until
    the worker pool misses the interchange's heartbeats (see `faasctl.images.containers`).
    """
    yield
    found = subprocess.run([podman, "ps", "-aq", "--filter", f"ancestor={pushed_worker}"],
                           capture_output=True, text=True, timeout=60).stdout.split()
    if found:
        subprocess.run([podman, "rm", "--force", "--time", "0", *found], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[float, list[float]]]:
    pallet = load_pallet(EXAMPLE)
    return {name: pyhf_hypotest(pallet.workspace_spec(patch)) for name, patch in pallet.patches.items()}


def _check(results: list[dict[str, Any]], reference: dict[str, tuple[float, list[float]]]) -> None:
    assert sorted(r["patch"] for r in results) == sorted(reference)
    for record in results:
        assert record["status"] == "ok", record
        obs, exp = reference[record["patch"]]
        assert agrees(record["cls_obs"], obs) and agrees(record["cls_exp"], exp), (record, obs, exp)


def _sinfo() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.docker
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_slurm_job_pulls_by_digest_and_fits_in_podman(podman, pushed_worker, worker_containers, reference, tmp_path):
    require(_sinfo(), "a Slurm cluster answering sinfo (.ci/slurm-up.sh)")
    # Not in podman's store: the Slurm job itself must pull it, by digest.
    subprocess.run([podman, "image", "rm", "--force", pushed_worker], capture_output=True, timeout=120)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "faasctl.cli", "fit", str(EXAMPLE), "--site", "slurm", "--direct",
               "--set", "container.type=podman", "--set", f"image={pushed_worker}",
               "--set", "provider.walltime=00:20:00", "--out", "out", "--no-plot"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    print(f"direct-mode scan in podman on Slurm: {time.perf_counter() - start:.0f} s")  # with -rP
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check(json.loads((tmp_path / "out" / "results.json").read_text())["results"], reference)

    # The block ran the pinned image with podman, which pulled it in the Slurm job (the block's stderr).
    blocks = tmp_path / "runinfo" / "faasctl-slurm"
    commands = [path.read_text() for path in blocks.rglob("submit_scripts/cmd_*.sh")]
    assert commands and all(text.startswith("podman run --rm --network host --user 0:0 ") for text in commands), commands
    assert all(f" -t {pushed_worker} globus-compute-endpoint python-exec " in text for text in commands)
    stderr = "".join(path.read_text() for path in blocks.rglob("submit_scripts/*.stderr"))
    assert f"Trying to pull {pushed_worker}..." in stderr, stderr[-2000:]
    assert subprocess.run([podman, "image", "exists", pushed_worker], timeout=60).returncode == 0


@pytest.mark.docker
@pytest.mark.slurm
@pytest.mark.slow
def test_a_wrong_digest_fails_the_scan_at_once(podman, pushed_worker, tmp_path):
    wrong = re.sub(r"sha256:\w+", DIGEST, pushed_worker)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "faasctl.cli", "fit", str(EXAMPLE), "--site", "slurm", "--direct",
         "--set", "container.type=podman", "--set", f"image={wrong}", "--out", "out", "--no-plot"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    print(f"refused in {time.perf_counter() - start:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"image {wrong} cannot be pulled with podman" in result.stdout + result.stderr
    assert not (tmp_path / "runinfo").exists() or not list((tmp_path / "runinfo").rglob("*.submit"))  # no block


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_globus_compute_engine_runs_workers_in_the_rendered_container(podman, pushed_worker, worker_containers, reference,
                                                                      tmp_path):
    from faasctl.executors.gc_engine import local_engine
    from faasctl.scan.client import FitClient

    # The container settings exactly as the rendered endpoint config gives them to the engine.
    site = _site("podman", pushed_worker)
    engine = load_endpoint_config(render_endpoint(site), site=site).engine
    container = {key: getattr(engine, key) for key in ("container_type", "container_uri", "container_cmd_options")}
    assert container["container_uri"] == pushed_worker and "--network host" in container["container_cmd_options"]

    pallet = load_pallet(EXAMPLE)
    with local_engine(workers=2, run_dir=tmp_path / "endpoint", container=container) as executor:
        launch = executor.engine.executor.launch_cmd
        assert launch.startswith("podman run --rm --network host") and f"-t {pushed_worker} " in launch
        results = [r.model_dump() if hasattr(r, "model_dump") else vars(r) for r in FitClient(executor).scan(pallet)]
    _check(results, reference)
