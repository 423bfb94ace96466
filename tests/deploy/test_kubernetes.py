"""deploy/k8s: every kustomization builds, every object is valid, and the design holds."""

import copy
import re
from urllib.parse import urlsplit

import pytest
import yaml
from manifests import (
    K8S,
    KUSTOMIZATIONS,
    all_containers,
    build,
    container,
    env,
    find,
    generated,
    pod_template,
    validation_errors,
    workloads,
)

CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_is_valid(kustomization: str) -> None:
    objects = build(kustomization)
    assert objects
    errors = {
        f"{o['kind']}/{o['metadata']['name']}": validation_errors(o)
        for o in objects
        if validation_errors(o)
    }
    assert not errors, errors


def test_validation_rejects_broken_objects() -> None:
    """The validators are real: a typo or a wrong type in any kind fails."""
    objects = build("overlays/scaledobject")
    deployment = copy.deepcopy(find(objects, "Deployment", "worker"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    scaled_object = copy.deepcopy(find(objects, "ScaledObject", "worker"))
    scaled_object["spec"]["minReplicas"] = 0
    auth = copy.deepcopy(find(objects, "TriggerAuthentication", "rabbitmq"))
    del auth["spec"]["secretTargetRef"][0]["key"]
    rabbit = copy.deepcopy(find(objects, "RabbitmqCluster", "rabbitmq"))
    rabbit["spec"]["replicas"] = "three"
    job = copy.deepcopy(find(build("overlays/scaledjob"), "ScaledJob", "worker"))
    job["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["args"] = "sd-worker"
    hpa = copy.deepcopy(find(objects, "HorizontalPodAutoscaler", "web"))
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilisation"] = 70
    budget = copy.deepcopy(find(objects, "PodDisruptionBudget", "web"))
    budget["spec"]["minAvailable"] = [1]
    redis = copy.deepcopy(find(objects, "StatefulSet", "redis"))
    redis["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"] = "redis-cli"
    for broken in (deployment, scaled_object, auth, rabbit, job, hpa, budget, redis):
        assert validation_errors(broken), broken["kind"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_namespaced_and_references_resolve(kustomization: str) -> None:
    """Everything lands in sd-webui, and each ConfigMap a pod names is in the build (hashed)."""
    objects = build(kustomization)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "sd-webui", obj["metadata"]["name"]
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for workload in workloads(objects):
        spec = pod_template(workload)["spec"]
        named = [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
        for c in all_containers(spec):
            named += [s["configMapRef"]["name"] for s in c.get("envFrom", [])]
        assert set(named) <= config_maps, (workload["metadata"]["name"], named)
        # The app's pods read its settings; Redis has none of them.
        assert named or workload["metadata"]["name"] == "redis", workload["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_hardened_and_sized(kustomization: str) -> None:
    """Pod Security `restricted` for every container, sidecars included; requests and limits."""
    for workload in workloads(build(kustomization)):
        spec = pod_template(workload)["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in all_containers(spec):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, c["name"]
            assert context["capabilities"]["drop"] == ["ALL"], c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_literal_secrets(kustomization: str) -> None:
    """Credentials only through secretKeyRef; no Secret objects, no URL with a password."""
    objects = build(kustomization)
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert not CREDENTIALS_IN_URL.search(yaml.safe_dump_all(objects))
    for workload in workloads(objects):
        for c in all_containers(pod_template(workload)["spec"]):
            variables = env(c)
            for name in ("AMQP_URL", "MC_HOST_minio"):
                if name in variables:
                    assert set(variables[name]) == {"secretKeyRef"}, (c["name"], name)


def test_web_app() -> None:
    objects = build("base")
    spec = pod_template(find(objects, "Deployment", "web"))["spec"]
    web = container(spec, "web")
    assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    images_dir = generated(objects, "sd-webui-config")["data"]["IMAGES_DIR"]
    [mount] = [m for m in web["volumeMounts"] if m["mountPath"] == images_dir]
    assert mount["readOnly"] is True
    # The mirror sidecar: a native sidecar filling that same volume from the bucket `images`.
    mirror = container(spec, "mirror")
    assert mirror["restartPolicy"] == "Always"
    assert mirror["image"].startswith("minio/mc:")
    assert mirror["args"][:2] == ["mirror", "--watch"]
    assert mirror["args"][-2:] == ["minio/images", images_dir]
    assert {m["name"] for m in mirror["volumeMounts"] if m["mountPath"] == images_dir} == {
        mount["name"]
    }
    # Service and Ingress route to the container's port.
    service = find(objects, "Service", "web")
    selector = find(objects, "Deployment", "web")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == web["ports"][0]["name"]
    [path] = find(objects, "Ingress", "web")["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "web", "port": {"name": "http"}}
    assert find(objects, "RabbitmqCluster", "rabbitmq")["spec"]["replicas"] >= 1


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels only, as these manifests write them) picks `labels`."""
    assert set(selector) == {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_web_replicas_autoscaled_spread_and_disruption_safe(kustomization: str) -> None:
    """Two web replicas at least, scaled on CPU, on different nodes where possible, one kept
    through voluntary disruptions; any replica serves any tab (no session affinity)."""
    objects = build(kustomization)
    deployment = find(objects, "Deployment", "web")
    pod = pod_template(deployment)
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = find(objects, "PodDisruptionBudget", "web")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["minAvailable"] == 1
    assert selects(budget["spec"]["selector"], labels)
    others = [o for o in workloads(objects) if o is not deployment]
    assert not [
        o
        for o in others
        if selects(budget["spec"]["selector"], pod_template(o)["metadata"]["labels"])
    ]
    hpa = find(objects, "HorizontalPodAutoscaler", "web")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": "web",
    }
    assert hpa["spec"]["minReplicas"] == 2 < hpa["spec"]["maxReplicas"] <= 10
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Utilisation is the pod's CPU use over the sum of its containers' requests: all request CPU.
    for c in all_containers(pod["spec"]):
        assert c["resources"]["requests"]["cpu"], c["name"]
    [spread] = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["maxSkew"] == 1
    assert selects(spread["labelSelector"], labels)
    annotations = find(objects, "Ingress", "web")["metadata"]["annotations"]
    assert not [key for key in annotations if "affinity" in key]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    body_limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body_limit.endswith("m") and int(body_limit.removesuffix("m")) >= 2


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_web_replicas_share_the_redis_of_the_namespace(kustomization: str) -> None:
    """REDIS_URL names the Redis Service of the build; that Service reaches the Redis
    StatefulSet, which is checked with `redis-cli ping` and admits only the web pods."""
    objects = build(kustomization)
    web_pod = pod_template(find(objects, "Deployment", "web"))
    url = urlsplit(env(container(web_pod["spec"], "web"))["REDIS_URL"])
    assert url.scheme == "redis" and not url.password
    [name, *domain] = url.hostname.split(".")
    assert domain in ([], ["sd-webui", "svc"], ["sd-webui", "svc", "cluster", "local"])
    service = find(objects, "Service", name)
    [port] = [p for p in service["spec"]["ports"] if p["port"] == (url.port or 6379)]
    statefulset = find(objects, "StatefulSet", name)
    assert statefulset["spec"]["serviceName"] == name
    assert statefulset["spec"]["replicas"] == 1
    pod = pod_template(statefulset)
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    redis = container(pod["spec"], "redis")
    assert redis["image"].startswith("redis:") and redis["image"] != "redis:latest"
    assert port["targetPort"] in [p["name"] for p in redis["ports"]]
    for probe in ("readinessProbe", "livenessProbe"):
        assert redis[probe]["exec"]["command"] == ["redis-cli", "ping"], probe
    assert redis["args"][0] == "redis-server"
    [policy] = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert selects(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert selects(source["podSelector"], web_pod["metadata"]["labels"])
    assert rule["ports"] == [{"protocol": "TCP", "port": port["targetPort"]}]


def worker_pod_checks(spec: dict) -> None:
    """The worker pod, as a Deployment's or a ScaledJob's: grace, upload sidecar, shared folder."""
    assert spec["terminationGracePeriodSeconds"] == 120
    worker, upload = container(spec, "worker"), container(spec, "upload")
    variables = env(worker)
    assert float(variables["SHUTDOWN_GRACE_S"]) < spec["terminationGracePeriodSeconds"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert upload["restartPolicy"] == "Always"  # native sidecar: stopped after the worker
    assert upload in spec["initContainers"]
    assert upload["command"] == ["bash", "/scripts/upload-complete-jobs.sh"]
    assert env(upload)["MC_TARGET"] == "minio/images"
    worker_mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    upload_mounts = {m["mountPath"]: m["name"] for m in upload["volumeMounts"]}
    images_dir = env(upload)["IMAGES_DIR"]
    assert worker_mounts[images_dir] == upload_mounts[images_dir]
    assert worker_mounts[variables["HF_HOME"]] == "model-cache"


def test_sidecar_script_is_the_file_in_the_repo() -> None:
    config_map = generated(build("base"), "upload-complete-jobs")
    script = K8S / "base" / "upload-complete-jobs.sh"
    assert config_map["data"]["upload-complete-jobs.sh"] == script.read_text()


def test_base_worker() -> None:
    deployment = find(build("base"), "Deployment", "worker")
    worker_pod_checks(pod_template(deployment)["spec"])
    assert env(container(pod_template(deployment)["spec"], "worker"))["EXIT_AFTER_ONE_TASK"] == "0"


def rabbitmq_trigger(objects: list, owner: dict) -> dict:
    [trigger] = owner["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "tasks"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["value"] == "1"
    assert "host" not in trigger["metadata"]  # the URL holds credentials: only from the Secret
    auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    return trigger


def test_scaledobject_overlay() -> None:
    objects = build("overlays/scaledobject")
    scaled = find(objects, "ScaledObject", "worker")
    deployment = find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in deployment["spec"]  # KEDA owns it
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 8, 150)
    rabbitmq_trigger(objects, scaled)
    worker_pod_checks(pod_template(deployment)["spec"])


def test_scaledjob_overlay() -> None:
    objects = build("overlays/scaledjob")
    assert ("Deployment", "worker") not in {(o["kind"], o["metadata"]["name"]) for o in objects}
    scaled = find(objects, "ScaledJob", "worker")
    assert scaled["spec"]["maxReplicaCount"] == 4
    job = scaled["spec"]["jobTargetRef"]
    assert (job["parallelism"], job["completions"]) == (1, 1)
    spec = job["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert env(container(spec, "worker"))["EXIT_AFTER_ONE_TASK"] == "1"
    rabbitmq_trigger(objects, scaled)
    worker_pod_checks(spec)
    # The Job's pod is the base worker pod (copied, not re-typed) with only the Job changes.
    base = copy.deepcopy(pod_template(find(build("base"), "Deployment", "worker")))
    base["spec"]["restartPolicy"] = "Never"
    for variable in container(base["spec"], "worker")["env"]:
        if variable["name"] == "EXIT_AFTER_ONE_TASK":
            variable["value"] = "1"
    by_name = sorted(container(base["spec"], "worker")["env"], key=lambda e: e["name"])
    assert sorted(container(spec, "worker")["env"], key=lambda e: e["name"]) == by_name
    container(base["spec"], "worker")["env"] = container(spec, "worker")["env"]
    assert job["template"] == base


def test_gpu_overlay() -> None:
    objects = build("overlays/gpu")
    find(objects, "ScaledObject", "worker")
    spec = pod_template(find(objects, "Deployment", "worker"))["spec"]
    worker = container(spec, "worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert [e for e in worker["env"] if e["name"] == "SD_DEVICE"] == [
        {"name": "SD_DEVICE", "value": "cuda"}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert worker["image"].endswith("-cuda")
    worker_pod_checks(spec)


def test_minio_values() -> None:
    """The Helm values create bucket `images` and take every credential from Secrets."""
    values = yaml.safe_load((K8S / "minio" / "values.yaml").read_text())
    assert "images" in [bucket["name"] for bucket in values["buckets"]]
    assert values["existingSecret"] and not values.get("rootPassword")
    for user in values["users"]:
        assert user["existingSecret"] and "secretKey" not in user


def test_secrets_template_is_in_no_kustomization() -> None:
    """secrets.example.yaml documents every Secret the manifests read and is never applied."""
    template = K8S / "secrets.example.yaml"
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert template.name not in kustomization.read_text()
    documented = {
        (s["metadata"]["name"], key)
        for s in yaml.safe_load_all(template.read_text())
        for key in s["stringData"]
    }
    referenced = set()
    for kustomization in KUSTOMIZATIONS:
        objects = build(kustomization)
        for workload in workloads(objects):
            for c in all_containers(pod_template(workload)["spec"]):
                for value in env(c).values():
                    if isinstance(value, dict) and "secretKeyRef" in value:
                        ref = value["secretKeyRef"]
                        referenced.add((ref["name"], ref["key"]))
        for auth in (o for o in objects if o["kind"] == "TriggerAuthentication"):
            referenced |= {(r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert referenced == documented
