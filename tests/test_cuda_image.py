"""The CUDA worker image: its Dockerfile, its self test's GPU check, the GPU sites' memory policy, a real build.

No GPU is needed: without one, the CUDA image's self test must fail, saying how to expose the GPU, while
CUDA's libraries (the nvidia-* wheels) load. The real build (marked docker and slow) needs a Docker engine
and a local base image with Python (``eval "$(.ci/docker-up.sh)"`` exports DOCKER_HOST and FAASCTL_BASE_IMAGE).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from importlib import metadata

import pytest
from conftest import ROOT, require
from test_images import instructions

from faasctl.study import agrees
from typer.testing import CliRunner

from faasctl import __version__
from faasctl.cli.main import app
from faasctl.images.selftest import FLAVOR_ENV, NO_GPU_HELP, synthetic_pallet
from faasctl.images.selftest import main as selftest_main
from faasctl.pallets.load import Patch, apply_patch
from faasctl.sites import load_site
from faasctl.sites.render import GPU_WORKER_ENV, load_endpoint_config, render_endpoint
from faasctl.study import pyhf_hypotest

DOCKERFILE = ROOT / "images" / "cuda" / "Dockerfile"
runner = CliRunner()


def image_env(dockerfile=DOCKERFILE) -> dict[str, str]:
    """The final stage's ENV settings (``KEY=VALUE`` pairs)."""
    final = [args for keyword, args in instructions(dockerfile) if keyword == "ENV"]
    return dict(pair.split("=", 1) for args in final for pair in args.split())


# --- the Dockerfile ----------------------------------------------------------------------------------


def test_cuda_image_builds_on_the_cpu_images_base():
    """No nvidia/cuda base: the nvidia-* wheels bring CUDA, the runtime mounts the driver."""
    def base_arg(flavor):
        args = [args for keyword, args in instructions(ROOT / "images" / flavor / "Dockerfile") if keyword == "ARG"]
        return args[0]

    assert base_arg("cuda") == base_arg("cpu") == "BASE_IMAGE=python:3.11-slim"
    text = "\n".join(f"{keyword} {args}" for keyword, args in instructions(DOCKERFILE))  # comments left out
    assert "nvidia/cuda" not in text and "NVIDIA_REQUIRE_CUDA" not in text
    # NVIDIA_VISIBLE_DEVICES=all in an image hands every GPU to it on hosts whose default runtime is NVIDIA's,
    # past the Kubernetes device plugin; GPUs come only from --gpus / --nv / nvidia.com/gpu.
    assert "NVIDIA_VISIBLE_DEVICES" not in text
    froms = [args for keyword, args in instructions(DOCKERFILE) if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS wheel", "${BASE_IMAGE} AS venv", "${BASE_IMAGE}"]
    # the venv is copied last, as in the CPU image: no later step copies its gigabytes again on vfs
    assert instructions(DOCKERFILE)[-1] == ("COPY", "--from=venv /opt/venv /opt/venv")


def test_cuda_image_env_has_flavor_and_gpu_memory_policy():
    env = image_env()
    assert env[FLAVOR_ENV] == "cuda"
    assert {key: env.get(key) for key in GPU_WORKER_ENV} == GPU_WORKER_ENV
    assert FLAVOR_ENV not in image_env(ROOT / "images" / "cpu" / "Dockerfile")


# --- the self test's GPU check, with this machine's JAX ----------------------------------------------------


def test_cpu_flavor_does_no_gpu_check(capsys, monkeypatch):
    monkeypatch.delenv(FLAVOR_ENV, raising=False)
    assert selftest_main(["--backend", "jax"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and "gpu" not in report and report["info"]["flavor"] == "cpu"


def test_cuda_flavor_without_cuda_plugin_is_a_broken_image(capsys, monkeypatch):
    """This machine's JAX has no CUDA plugin: a missing library, not the "no GPU here" failure."""
    pytest.importorskip("jax")
    if any(name.lower().startswith("jax-cuda") for name in _distributions()):
        pytest.skip("this JAX has its CUDA plugin")
    monkeypatch.setenv(FLAVOR_ENV, "cuda")
    assert selftest_main(["--backend", "jax"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["result"]["status"] == "ok" and report["info"]["flavor"] == "cuda"
    gpu = report["gpu"]
    assert not report["ok"] and not gpu["ok"] and not gpu["libraries"]
    assert gpu["devices"] == [] and gpu["default_backend"] == "cpu"
    assert "error: JAX's CUDA backend is broken, not only without a GPU" in captured.err
    # the fit itself still ran, on the CPU, and agreed with pyhf
    background, patch = synthetic_pallet()
    obs, _ = pyhf_hypotest(apply_patch(background, Patch(patch["name"], tuple(patch["values"]), patch["operations"])))
    assert agrees(report["result"]["cls_obs"], obs)


def test_cuda_flavor_numpy_backend_needs_no_gpu(capsys, monkeypatch):
    monkeypatch.setenv(FLAVOR_ENV, "cuda")
    assert selftest_main(["--backend", "numpy"]) == 0
    assert "gpu" not in json.loads(capsys.readouterr().out)


def _distributions() -> list[str]:
    return [dist.metadata["Name"] for dist in metadata.distributions()]


# --- GPU sites: memory policy and pinning, as rendered and loaded by Globus Compute ---------------------


@pytest.fixture
def loaded():
    """Load a rendered endpoint with Globus Compute's loader; shut the engines down after."""
    engines = []

    def load(site, values=None):
        config = load_endpoint_config(render_endpoint(site), values)
        engines.append(config.engine)
        return config

    yield load
    for engine in engines:
        engine.shutdown()


def _gpu_exports():
    return [f"export {key}={value}" for key, value in GPU_WORKER_ENV.items()]


def test_polaris_pins_one_worker_per_gpu_with_memory_on_demand(loaded):
    site = load_site("polaris")
    executor = loaded(site, {"account": "proj1"}).engine.executor
    # parsl's HTEX: worker i gets CUDA_VISIBLE_DEVICES=i, and no more workers than GPUs
    assert executor.available_accelerators == ["0", "1", "2", "3"]
    assert executor._workers_per_node == 4
    worker_init = executor.provider.worker_init
    assert all(line in worker_init.splitlines() for line in _gpu_exports())
    assert site.image.endswith("-cuda") and "--nv" in site.container.options.split()


def test_kubernetes_gpu_workers_get_the_policy_and_the_gpus(loaded):
    """A GPU variant of the Kubernetes site (docs/images.md): the pod asks the device plugin for 2 GPUs."""
    site = load_site("kubernetes", overrides=[
        f"image=ghcr.io/faasctl/faasctl-worker:{__version__}-cuda",
        "engine.available_accelerators=2",
        'provider.options.extra_limits={"nvidia.com/gpu": "2"}',
    ])
    executor = loaded(site).engine.executor
    assert executor.available_accelerators == ["0", "1"]
    assert executor.provider.extra_limits == {"nvidia.com/gpu": "2"}
    assert all(line in executor.provider.worker_init.splitlines() for line in _gpu_exports())


def test_cpu_sites_do_not_get_the_gpu_policy():
    for name in ("river", "kubernetes", "slurm"):
        rendered = render_endpoint(load_site(name))["user_config_template.yaml.j2"]
        assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in rendered, name


# --- a real build, run without a GPU ---------------------------------------------------------------------


#: What the build takes on copy-based storage (vfs, as in CI): ~6.3 GB of image, more while building (vfs
#: copies every layer whole): a build that started with ~22 GB free beside the CPU image ran out of space.
CUDA_BUILD_DISK = 24e9


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~6 min here; a loaded machine took far longer
def test_cuda_image_builds_and_its_self_test_fails_for_want_of_a_gpu(docker_engine):
    """The CUDA image, built for real (~6 min here: ~3 GB of nvidia wheels, then vfs copies), run without a GPU."""
    base = os.environ.get("FAASCTL_BASE_IMAGE")
    require(base is not None, "FAASCTL_BASE_IMAGE, a local base image with Python (.ci/docker-up.sh)")
    if os.environ.get("FAASCTL_BUILD_CUDA_IMAGE") == "0":
        pytest.skip("FAASCTL_BUILD_CUDA_IMAGE=0 (opted out)")
    free = shutil.disk_usage(docker_engine.info()["DockerRootDir"]).free
    if free < CUDA_BUILD_DISK:  # a limit of the machine, not a missing service: say so, do not fail the run on it
        pytest.skip(f"{free / 1e9:.0f} GB free where the Docker engine keeps its images; the CUDA build needs "
                    f"{CUDA_BUILD_DISK / 1e9:.0f} GB")
    tag = "faasctl-worker:pytest-cuda"

    before = {image.id for image in docker_engine.images.list(all=True)}
    try:
        _build_and_run_without_gpu(docker_engine, base, tag)
    finally:
        # give the disk back (the CPU image builds next), removing only what this build made: the CPU
        # build's cached stages stay
        made = [i.id for i in docker_engine.images.list(all=True) if i.id not in before]
        while made:  # a parent goes once its children have: pass again while that frees some
            left = []
            for image_id in made:
                try:
                    docker_engine.images.remove(image_id, force=True, noprune=True)
                except Exception:  # noqa: BLE001 - has children still (or already gone)
                    left.append(image_id)
            if len(left) == len(made):
                break
            made = left


def _build_and_run_without_gpu(docker_engine, base, tag):
    start = time.perf_counter()
    result = runner.invoke(app, ["image", "build", "--flavor", "cuda", "--base-image", base, "--tag", tag, "--quiet"])
    assert result.exit_code == 0, result.output
    image = docker_engine.images.get(tag)
    # shown with -rP: the CI budget and the disk it takes
    print(f"cuda image built in {time.perf_counter() - start:.0f} s, {image.attrs['Size'] / 1e9:.2f} GB")
    assert image.labels["dev.faasctl.flavor"] == "cuda" and image.attrs["Config"]["User"] == "1000:1000"
    env = dict(entry.split("=", 1) for entry in image.attrs["Config"]["Env"])
    assert env[FLAVOR_ENV] == "cuda" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"

    # The default command, the self test with JAX, on a machine with no GPU: exit 1, and why.
    container = docker_engine.containers.run(tag, network_mode="none", detach=True)
    try:
        status = container.wait(timeout=600)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert status == 1, err
    report = json.loads(out)
    gpu = report["gpu"]
    assert (report["ok"], gpu["ok"], gpu["devices"], gpu["default_backend"]) == (False, False, [], "cpu")
    # CUDA's libraries loaded and found no GPU: the expected failure, not a library missing from the image
    assert gpu["libraries"], gpu["error"]
    assert "error: no GPU visible to JAX (" in err and NO_GPU_HELP in err
    # Everything else in the image works: the JAX fit ran (on the CPU) and agreed with plain pyhf.
    assert report["result"]["status"] == "ok" and report["result"]["backend"] == "jax"
    assert report["reference"]["cls_obs"] == pytest.approx(report["result"]["cls_obs"], rel=1e-3, abs=1e-5)
    assert report["info"]["faasctl"] == __version__ and report["info"]["python"].startswith("3.11")


def test_perlmutter_gpu_nodes_with_podman_hpc(loaded):
    """The Perlmutter GPU variant docs/images.md gives: GPU nodes, podman-hpc --gpu, one worker per GPU."""
    site = load_site("perlmutter", overrides=[
        "provider.constraint=gpu",
        'provider.scheduler_options="#SBATCH --gpus-per-node=4"',
        "provider.launcher.overrides=-c 128 --cpu-bind=none",
        "engine.max_workers_per_node=4",
        "engine.available_accelerators=4",
        f"image=ghcr.io/faasctl/faasctl-worker:{__version__}-cuda",
        "container.type=podman-hpc",
        "container.options=--gpu",
    ])
    config = loaded(site, {"account": "m1234"})
    engine = config.engine
    assert (engine.container_type, engine.container_cmd_options) == ("podman-hpc", "--rm --network host --gpu")  # faasctl adds --rm and host network (faasctl.images.containers)
    executor = engine.executor
    assert executor.available_accelerators == ["0", "1", "2", "3"] and executor._workers_per_node == 4
    provider = executor.provider
    assert provider.constraint == "gpu" and "#SBATCH --gpus-per-node=4" in provider.scheduler_options
    assert all(line in provider.worker_init.splitlines() for line in _gpu_exports())
