"""A worker image's self test: one small fit through the worker's own code path, as JSON on stdout.

The images run it by default (``docker run IMAGE``); it is also how to check a GPU image::

    python -m faasctl.images.selftest                                  # a tiny synthetic model
    python -m faasctl.images.selftest --pallet DIR --patch NAME --backend jax

The fit goes through `faasctl.scan.worker.fit_patch`, exactly as on a Globus Compute or parsl worker. With a
backend other than ``numpy`` the same patch is also fitted by plain pyhf, and the CLs must agree.

The CUDA image sets ``FAASCTL_FLAVOR=cuda``. There, a JAX fit must also run on a GPU (`gpu_check`): JAX
falls back to the CPU with only a warning when the container sees no GPU (``--gpus all``/``--nv``
forgotten), and such a self test fails, saying how to expose the GPU. Whether CUDA's own libraries (the
``nvidia-*`` wheels) load is checked too, so that "no GPU here" and "a broken image" read differently.
Exit status: 0 when the fit succeeded (and agreed, on a GPU for the CUDA image), 1 when it did not, 2 for a
bad pallet or patch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["FLAVOR_ENV", "NO_GPU_HELP", "gpu_check", "main", "run_selftest", "synthetic_pallet"]

#: Set by the images (``ENV FAASCTL_FLAVOR=cuda``): the flavor the self test holds the image to.
FLAVOR_ENV = "FAASCTL_FLAVOR"
#: How each container runtime exposes NVIDIA GPUs (docs/images.md).
NO_GPU_HELP = (
    "expose the GPU to the container: docker run --gpus all, podman run --device nvidia.com/gpu=all, "
    "apptainer run --nv, podman-hpc run --gpu, or a Kubernetes resources.limits nvidia.com/gpu"
)
#: Fragments of the errors JAX's CUDA plugin raises when its libraries load but find no GPU or no driver:
#: the expected failure without a GPU. Anything else (a library that does not load) is a broken image.
_NO_DEVICE = (
    "no supported devices found",
    "no visible gpu",
    "cuda_error_no_device",
    "cuinit",
    "libcuda.so",
    "cuda driver",
    "found 0 devices",
)


def synthetic_pallet() -> tuple[dict[str, Any], dict[str, Any]]:
    """A two-bin background with normsys, histosys and staterror, and one signal patch for it."""
    background = {
        "channels": [{"name": "SR", "samples": [{
            "name": "background",
            "data": [50.0, 52.0],
            "modifiers": [
                {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                {"name": "bkg_shape", "type": "histosys", "data": {"hi_data": [53.0, 55.0], "lo_data": [47.0, 49.0]}},
                {"name": "staterror_SR", "type": "staterror", "data": [3.0, 3.5]},
            ],
        }]}],
        "observations": [{"name": "SR", "data": [51.0, 48.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }
    signal = {"name": "signal", "data": [6.0, 9.0], "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None}]}
    patch = {"name": "synthetic", "values": [1.0], "operations": [{"op": "add", "path": "/channels/0/samples/1", "value": signal}]}
    return background, patch


def gpu_check() -> dict[str, Any]:
    """JAX's CUDA devices: ``{"ok", "devices", "default_backend", "libraries", "error"}``.

    ``ok`` when JAX has a CUDA device and computes on it by default. Without one, ``jax.devices("cuda")``
    raises; ``libraries`` tells the expected error of a machine with no GPU (CUDA's libraries loaded and
    found no device or no driver: True) from any other one, such as a library missing from the image (False).
    """
    import jax

    try:
        devices = [str(d) for d in jax.devices("cuda")]
    except RuntimeError as err:
        message = " ".join((_cuda_plugin_error() or str(err)).split())
        libraries = any(fragment in message.lower() for fragment in _NO_DEVICE)
        error = (f"no GPU visible to JAX ({message}): {NO_GPU_HELP}" if libraries
                 else f"JAX's CUDA backend is broken, not only without a GPU ({message}): rebuild the image")
        return {"ok": False, "devices": [], "default_backend": jax.default_backend(), "libraries": libraries,
                "error": error}
    default = jax.default_backend()
    ok = bool(devices) and default == "gpu"
    error = None if ok else f"JAX computes on {default}, not on the GPUs {devices}"
    return {"ok": ok, "devices": devices, "default_backend": default, "libraries": True, "error": error}


def _cuda_plugin_error() -> str | None:
    """Why JAX's CUDA plugin did not start, from its own version check run again (JAX only logs it and
    then knows no ``cuda`` backend at all)."""
    try:
        from jax_plugins import xla_cuda12

        xla_cuda12._check_cuda_versions(raise_on_first_error=True)
    except ImportError as err:
        return f"JAX's CUDA plugin does not import: {err}"
    except Exception as err:  # noqa: BLE001 - any failure of the check is the reason
        return str(err)
    return None


def run_selftest(pallet: str | None = None, patch: str | None = None, backend: str = "auto",
                 flavor: str | None = None) -> dict[str, Any]:
    """Fit one patch as a worker does; return ``{"ok", "info", "result", ...}``.

    Args:
        pallet: a pallet folder or archive; None for the synthetic model.
        patch: the patch to fit (default: the pallet's first).
        backend: ``numpy``, ``jax`` or ``auto``.
        flavor: the image's flavor (default: ``$FAASCTL_FLAVOR``, else ``cpu``); with ``cuda``, a fit with
            JAX must run on a GPU (``report["gpu"]``, `gpu_check`).
    """
    flavor = flavor or os.environ.get(FLAVOR_ENV) or "cpu"
    from faasctl.pallets import Patch, apply_patch, load_pallet, workspace_digest
    from faasctl.scan.worker import fit_patch, worker_info

    if pallet is None:
        background, patch_info = synthetic_pallet()
        digest = workspace_digest(background)
    else:
        loaded = load_pallet(pallet)
        chosen = loaded.select([patch] if patch else None)[0]
        background, digest = loaded.background, loaded.digest
        patch_info = {"name": chosen.name, "values": list(chosen.values), "operations": chosen.operations}

    result = fit_patch({"digest": digest, "background": background, "patch": patch_info, "backend": backend})
    report: dict[str, Any] = {"info": {**worker_info(), "uid": os.getuid(), "flavor": flavor}, "result": result}
    ok = result.get("status") == "ok"
    if flavor == "cuda" and result["backend"] == "jax":
        report["gpu"] = gpu_check()
    if ok and result["backend"] != "numpy":
        import jax

        from faasctl.study import agrees, pyhf_hypotest

        report["devices"] = [str(d) for d in jax.devices()]
        patch_obj = Patch(patch_info["name"], tuple(patch_info["values"]), patch_info["operations"])
        spec = apply_patch(background, patch_obj, shared=True)
        ref_obs, ref_exp = pyhf_hypotest(spec)
        report["reference"] = {"backend": "numpy", "cls_obs": ref_obs, "cls_exp": ref_exp}
        ok = agrees([result["cls_obs"], *result["cls_exp"]], [ref_obs, *ref_exp])
    report["ok"] = ok and report.get("gpu", {}).get("ok", True)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the report as JSON."""
    parser = argparse.ArgumentParser(prog="python -m faasctl.images.selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--pallet", help="a pallet folder or .tar.gz (default: a tiny synthetic model)")
    parser.add_argument("--patch", help="the patch to fit (default: the pallet's first)")
    parser.add_argument("--backend", default="auto", choices=("numpy", "jax", "auto"), help="default: %(default)s")
    args = parser.parse_args(argv)
    from faasctl.exceptions import FaasctlError

    try:
        report = run_selftest(args.pallet, args.patch, args.backend)
    except FaasctlError as err:  # a bad --pallet/--patch: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if report.get("gpu", {}).get("error"):
        print(f"error: {report['gpu']['error']}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
