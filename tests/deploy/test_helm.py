"""The Helm chart helm/faasctl-endpoint with the real helm 3 binary (.ci/helm-get.sh).

No Kubernetes API server can run here, so the chart is checked offline: ``helm lint --strict``,
``helm template --show-only`` per template with several value sets, every manifest validated
against the Kubernetes OpenAPI schemas by ``kubernetes-validate --strict``, the values schema
refusing wrong types, and the endpoint config inside the rendered ConfigMap rendered and
loaded by Globus Compute's own CLI and loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, require, which
from faasctl.deploy import RunCommand, WriteFiles
from faasctl.deploy.helm import HelmDeployer, chart_dir, validate_values
from faasctl.exceptions import DeployError
from faasctl.sites.render import load_endpoint_config, render_endpoint
from faasctl.sites import load_site

pytestmark = pytest.mark.helm

CHART = ROOT / "helm" / "faasctl-endpoint"
#: a Kubernetes version kubernetes-validate ships schemas for, and that helm 3.17 (client 1.32) targets
KUBE_VERSION = "1.32.0"
TEMPLATES = [
    "endpoint-configmap.yaml",
    "endpoint-deployment.yaml",
    "endpoint-serviceaccount.yaml",
    "endpoint-role.yaml",
    "endpoint-rolebinding.yaml",
    "endpoint-pvc.yaml",
    "tests/endpoint-test.yaml",
]
ENDPOINT_ID = "0b6f3a6e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture(scope="module")
def helm() -> str:
    tool = which("helm")
    require(tool is not None, "helm (.ci/helm-get.sh)")
    return str(tool)


@pytest.fixture(scope="module")
def site() -> Any:
    return load_site("kubernetes")


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory, site: Any) -> Path:
    """The values file `faasctl deploy --site kubernetes` writes (through its plan)."""
    state = tmp_path_factory.mktemp("helm-state")
    deployer = HelmDeployer(site, state_dir=state)
    write = deployer.plan()[1]
    assert isinstance(write, WriteFiles)
    write.apply()
    return deployer.values_path


def _helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done


def _template(helm: str, values: Path, *extra: str, show_only: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["template", "kubernetes", str(CHART), "--namespace", "faasctl", "--kube-version", KUBE_VERSION,
            "--values", str(values), *extra]
    if show_only:
        args += ["--show-only", f"templates/{show_only}"]
    return _helm(helm, *args, check=check)


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_chart_is_the_one_faasctl_deploys() -> None:
    assert chart_dir() == CHART


def test_lint_strict(helm: str, values_file: Path) -> None:
    _helm(helm, "lint", "--strict", str(CHART), "--values", str(values_file), "--namespace", "faasctl")


# Value sets on top of faasctl's values: (name, --set arguments, templates that must render)
VALUE_SETS = [
    ("faasctl-defaults", [], TEMPLATES),
    (
        "no-rbac-existing-sa",
        ["--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=gc-endpoint"],
        ["endpoint-configmap.yaml", "endpoint-deployment.yaml", "endpoint-pvc.yaml", "tests/endpoint-test.yaml"],
    ),
    (
        "uuid-no-persistence",
        ["--set", "endpoint.persistence.enabled=false", "--set", f"endpoint.uuid={ENDPOINT_ID}"],
        [t for t in TEMPLATES if t != "endpoint-pvc.yaml"],
    ),
    (
        "everything-set",
        [
            "--set", "endpoint.imagePullSecrets[0]=regcred",
            "--set", "endpoint.imagePullSecrets[1].name=other",
            "--set", "endpoint.extraArgs[0]=--debug",
            "--set", "endpoint.extraEnvironmentVars.HTTPS_PROXY=http://proxy:3128",
            "--set", "endpoint.nodeSelector.kubernetes\\.io/arch=amd64",
            "--set", "endpoint.tolerations[0].key=dedicated",
            "--set", "endpoint.tolerations[0].operator=Exists",
            "--set", "endpoint.annotations.team=atlas",
            "--set", "serviceAccount.annotations.owner=faasctl",
            "--set", "endpoint.image.pullPolicy=Always",
            "--set", "fullnameOverride=gc",
            "--set", "endpoint.persistence.storageClassName=fast",
            "--set", f"endpoint.uuid={ENDPOINT_ID}",
        ],
        TEMPLATES,
    ),
    ("no-tests-no-security-context", ["--set", "tests.enabled=false", "--set", "endpoint.podSecurityContext=null"],
     TEMPLATES[:-1]),
]


@pytest.mark.parametrize(("name", "extra", "templates"), VALUE_SETS, ids=[v[0] for v in VALUE_SETS])
def test_templates_are_valid_kubernetes(helm: str, values_file: Path, tmp_path: Path, name: str, extra: list[str],
                                        templates: list[str]) -> None:
    files = []
    for template in templates:
        out = _template(helm, values_file, *extra, show_only=template).stdout
        assert _docs(out), f"{template} rendered nothing with value set {name}"
        path = tmp_path / template.replace("/", "_")
        path.write_text(out)
        files.append(str(path))
    for template in set(TEMPLATES) - set(templates):
        done = _template(helm, values_file, *extra, show_only=template, check=False)
        assert done.returncode != 0 and "could not find template" in done.stderr, f"{template} should be disabled"
    validate = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run([str(validate), "--strict", "--kubernetes-version", KUBE_VERSION, *files],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len(files), done.stdout


def test_deployment(helm: str, values_file: Path, site: Any) -> None:
    (deployment,) = _docs(_template(helm, values_file, show_only="endpoint-deployment.yaml").stdout)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["globus-compute-endpoint", "start", "kubernetes"]
    assert container["image"] == site.image
    env = {e["name"]: e for e in container["env"]}
    for name in ("GLOBUS_COMPUTE_CLIENT_ID", "GLOBUS_COMPUTE_CLIENT_SECRET"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "kubernetes-globus-compute", "key": name}
        assert "value" not in env[name]
    assert env["GLOBUS_COMPUTE_USER_DIR"]["value"] == "/var/lib/globus_compute"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # the init container installs the ConfigMap as the endpoint folder (writable emptyDir)
    (init,) = pod["initContainers"]
    assert {"name": "ENDPOINT_DIR", "value": "/var/lib/globus_compute/kubernetes"} in init["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "kubernetes-faasctl-endpoint-config"
    assert pod["serviceAccountName"] == "kubernetes-faasctl-endpoint"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["metadata"]["namespace"] == "faasctl"


def test_endpoint_keeps_its_identity_across_restarts(helm: str, values_file: Path) -> None:
    """endpoint.json (the registered id) lives on a PVC, or the id is given: never a fresh one per pod."""
    (deployment,) = _docs(_template(helm, values_file, show_only="endpoint-deployment.yaml").stdout)
    (pvc,) = _docs(_template(helm, values_file, show_only="endpoint-pvc.yaml").stdout)
    pod = deployment["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    # both the init container (installs the config) and the endpoint (writes endpoint.json) use it
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert {"name": "state", "mountPath": "/var/lib/globus_compute"} in container["volumeMounts"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]

    # without the volume, the endpoint id is a required value, passed to `start`
    done = _template(helm, values_file, "--set", "endpoint.persistence.enabled=false", check=False)
    assert done.returncode != 0 and "endpoint.uuid is required when endpoint.persistence.enabled is false" in done.stderr
    out = _template(helm, values_file, "--set", "endpoint.persistence.enabled=false", "--set", f"endpoint.uuid={ENDPOINT_ID}",
                    show_only="endpoint-deployment.yaml").stdout
    (deployment,) = _docs(out)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--endpoint-uuid", ENDPOINT_ID]
    done = _template(helm, values_file, "--set", "endpoint.uuid=not-a-uuid", check=False)
    assert done.returncode != 0 and "endpoint.uuid" in done.stderr


def _restricted(pod_spec: dict[str, Any]) -> list[str]:
    """What the "restricted" Pod Security Standard (Kubernetes 1.25+) would refuse in a pod spec."""
    problems = []
    pod_ctx = pod_spec.get("securityContext") or {}
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        ctx = container.get("securityContext") or {}
        name = container["name"]
        if not (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True):
            problems.append(f"{name}: runAsNonRoot")
        if 0 in (ctx.get("runAsUser"), pod_ctx.get("runAsUser")):
            problems.append(f"{name}: runAsUser 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if (ctx.get("capabilities") or {}).get("drop") != ["ALL"] or set((ctx.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
    allowed = {"name", "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    problems += [f"volume {v['name']}" for v in pod_spec.get("volumes", []) if set(v) - allowed]
    if pod_spec.get("hostNetwork") or pod_spec.get("hostPID") or pod_spec.get("hostIPC"):
        problems.append("host namespaces")
    return problems


def test_endpoint_and_test_pods_are_restricted(helm: str, values_file: Path) -> None:
    (deployment,) = _docs(_template(helm, values_file, show_only="endpoint-deployment.yaml").stdout)
    (test_pod,) = _docs(_template(helm, values_file, show_only="tests/endpoint-test.yaml").stdout)
    assert _restricted(deployment["spec"]["template"]["spec"]) == []
    assert _restricted(test_pod["spec"]) == []
    assert deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the check itself catches a pod that drops the hardening
    out = _template(helm, values_file, "--set", "endpoint.securityContext=null", show_only="endpoint-deployment.yaml").stdout
    assert "endpoint: allowPrivilegeEscalation" in _restricted(_docs(out)[0]["spec"]["template"]["spec"])


def test_worker_pods_run_unencrypted_and_non_root(helm: str, values_file: Path) -> None:
    """The config the chart installs: GC's KubernetesProvider without encryption, worker containers not root."""
    config = load_endpoint_config(_configmap_files(helm, values_file))
    try:
        assert config.engine.executor.encrypted is False
        provider = config.engine.executor.provider
        assert (provider.run_as_non_root, provider.user_id, provider.group_id) == (True, "1000", "1000")
    finally:
        config.engine.shutdown()


def test_config_change_restarts_the_endpoint(helm: str, values_file: Path, tmp_path: Path) -> None:
    def checksum(values: Path) -> str:
        (deployment,) = _docs(_template(helm, values, show_only="endpoint-deployment.yaml").stdout)
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    other = tmp_path / "values.yaml"
    deployer = HelmDeployer(load_site("kubernetes", overrides=["provider.max_blocks=3"]), state_dir=tmp_path)
    other.write_text(deployer.values_yaml())
    assert checksum(values_file) != checksum(other)


def test_rbac_lets_the_endpoint_manage_worker_pods(helm: str, values_file: Path) -> None:
    (role,) = _docs(_template(helm, values_file, show_only="endpoint-role.yaml").stdout)
    (binding,) = _docs(_template(helm, values_file, show_only="endpoint-rolebinding.yaml").stdout)
    (account,) = _docs(_template(helm, values_file, show_only="endpoint-serviceaccount.yaml").stdout)
    # exactly what parsl's KubernetesProvider calls: create/read/delete namespaced pods, nothing else
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]}]
    kube = Path(importlib.util.find_spec("parsl.providers.kubernetes.kube").origin).read_text()
    calls = set(re.findall(r"self\.kube_client\.(\w+)\(", kube))
    assert calls == {"create_namespaced_pod", "read_namespaced_pod", "delete_namespaced_pod"}, calls
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "faasctl"}]


def test_test_hook(helm: str, values_file: Path) -> None:
    (pod,) = _docs(_template(helm, values_file, show_only="tests/endpoint-test.yaml").stdout)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    mount = pod["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == "/var/lib/globus_compute/kubernetes"


def test_credentials_only_from_the_secret(helm: str, values_file: Path) -> None:
    """No Secret is rendered, and every credential variable of every container is a secretKeyRef."""
    docs = _docs(_template(helm, values_file).stdout)
    assert "Secret" not in {doc["kind"] for doc in docs}
    seen = 0
    for doc in docs:
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc.get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for var in container.get("env", []):
                if var["name"].startswith("GLOBUS_COMPUTE_CLIENT"):
                    assert set(var) == {"name", "valueFrom"} and "secretKeyRef" in var["valueFrom"], var
                    seen += 1
    assert seen == 2


def _configmap_files(helm: str, values: Path) -> dict[str, str]:
    (configmap,) = _docs(_template(helm, values, show_only="endpoint-configmap.yaml").stdout)
    return configmap["data"]


def test_configmap_is_exactly_what_faasctl_renders(helm: str, values_file: Path, site: Any) -> None:
    """One source of truth: the chart embeds `faasctl render kubernetes`, byte for byte."""
    assert _configmap_files(helm, values_file) == dict(render_endpoint(site))


def test_configmap_config_loads_in_globus_compute(helm: str, values_file: Path, site: Any, tmp_path: Path) -> None:
    """Extract the endpoint folder from the rendered ConfigMap, then do what the endpoint pod
    (and the chart's `helm test` hook, whose script this runs) does: render the user template
    with `globus-compute-endpoint render-user-config` and load it with `load_config_yaml`."""
    files = _configmap_files(helm, values_file)
    user_dir = tmp_path / "gc"
    endpoint_dir = user_dir / "kubernetes"
    endpoint_dir.mkdir(parents=True)
    for name, text in files.items():
        (endpoint_dir / name).write_text(text)

    (pod,) = _docs(_template(helm, values_file, show_only="tests/endpoint-test.yaml").stdout)
    script = pod["spec"]["containers"][0]["command"][2].replace("/tmp/user_config.yaml", str(tmp_path / "user.yaml"))
    # KubernetesProvider reads a kubeconfig when built (it contacts no server): give it a dummy.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "x", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    env = {**os.environ, "GLOBUS_COMPUTE_USER_DIR": str(user_dir), "ENDPOINT_NAME": "kubernetes",
           "KUBECONFIG": str(kubeconfig), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: GlobusComputeEngine KubernetesProvider" in done.stdout

    # and the same through Globus Compute's loader in this process, to look at the provider
    config = load_endpoint_config(files)
    try:
        provider = config.engine.executor.provider
        assert type(provider).__name__ == "KubernetesProvider"
        assert (provider.namespace, provider.image, provider.max_blocks) == ("faasctl", site.image, site.provider.max_blocks)
        assert "OMP_NUM_THREADS=1" in provider.worker_init
    finally:
        config.engine.shutdown()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--set", "rbac.create=yes"], "rbac.create"),
        (["--set", "endpoint.image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "endpoint.extraArgs=--debug"], "extraArgs"),
        (["--set", "serviceAccount.create=1"], "serviceAccount.create"),
        (["--set", "endpoint.name=Bad Name!"], "endpoint.name"),
        (["--set", "endpoint.credentials.secretKey=oops"], "secretKey"),
        (["--set", "endpoint.extraEnvironmentVars.GLOBUS_COMPUTE_CLIENT_SECRET=plain"], "extraEnvironmentVars"),
    ],
    ids=["bool-as-string", "enum", "list-as-string", "bool-as-int", "name-pattern", "unknown-key", "plain-credential"],
)
def test_schema_rejects_wrong_values(helm: str, values_file: Path, setting: list[str], message: str) -> None:
    done = _template(helm, values_file, *setting, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr


def test_missing_config_or_secret_fails_with_a_hint(helm: str, values_file: Path) -> None:
    done = _template(helm, values_file, "--set", "endpointConfig.configYaml=", check=False)
    assert done.returncode != 0 and "faasctl deploy --site NAME" in done.stderr
    done = _template(helm, values_file, "--set", "endpoint.credentials.secretName=", check=False)
    assert done.returncode != 0 and "existing Secret" in done.stderr


def test_faasctl_checks_values_against_the_schema_before_helm(site: Any, tmp_path: Path) -> None:
    deployer = HelmDeployer(site, values={"rbac": {"create": "yes"}}, state_dir=tmp_path, helm="/nonexistent/helm")
    with pytest.raises(DeployError, match=r"rbac\.create: 'yes' is not of type 'boolean'"):
        deployer.plan()
    with pytest.raises(DeployError, match="endpoint.image.pullPolicy"):
        validate_values({"endpoint": {"image": {"pullPolicy": "Sometimes"}}})
    assert not (tmp_path / "values.yaml").exists()


def test_plan_is_helm_upgrade_install_with_the_values(site: Any, tmp_path: Path, helm: str) -> None:
    deployer = HelmDeployer(site, values={"endpoint": {"credentials": {"secretName": "gc-client"}}},
                            state_dir=tmp_path, helm=helm)
    who, write, install = deployer.plan()
    assert who.describe() == (
        "who: single-user endpoint pod (uid 1000, service account kubernetes-faasctl-endpoint) in namespace faasctl, "
        "authenticated by the client credentials in Secret gc-client: it accepts tasks of that Globus identity only; "
        "the worker pods run as uid 1000, created by that service account"
    )
    assert isinstance(write, WriteFiles) and write.directory == tmp_path
    assert isinstance(install, RunCommand)
    assert list(install.argv) == [helm, "upgrade", "--install", "kubernetes", str(CHART), "--namespace", "faasctl",
                                  "--create-namespace", "--values", str(tmp_path / "values.yaml")]
    values = yaml.safe_load(write.files["values.yaml"])
    assert values["endpoint"]["credentials"]["secretName"] == "gc-client"
    assert values["endpointConfig"]["configYaml"] == render_endpoint(site)["config.yaml"]
    teardown = deployer.teardown_plan()
    assert list(teardown[0].argv) == [helm, "uninstall", "kubernetes", "--namespace", "faasctl"]


def test_status_without_a_cluster_is_a_deploy_error(site: Any, tmp_path: Path, helm: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "x", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(DeployError, match="helm status kubernetes|status kubernetes --namespace faasctl"):
        HelmDeployer(site, state_dir=tmp_path, helm=helm).status()
