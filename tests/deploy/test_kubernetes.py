"""deploy/k8s: every kustomization builds, every object is valid, and the design holds."""

import copy
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from manifests import (
    K8S,
    KUSTOMIZATIONS,
    REPO,
    all_containers,
    build,
    container,
    env,
    find,
    generated,
    kubectl,
    pod_template,
    validation_errors,
    workloads,
)

from sd_webui.jobs import Job, job_units
from sd_webui.settings import Settings

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
            for name in ("AMQP_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
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
    # Its folder is its own copy of the bucket's newest images, written by the app itself.
    assert "initContainers" not in spec
    [mount] = [m for m in web["volumeMounts"] if m["mountPath"] == images_dir]
    assert not mount.get("readOnly")
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    config = generated(objects, "sd-webui-config")["data"]
    largest_png = 1.5 * 2**20  # a 1024x1024 image; its JSON sidecar is under 2 KB
    assert quantity(volume["emptyDir"]["sizeLimit"]) >= int(config["S3_MIRROR_KEEP"]) * largest_png
    assert_bucket_settings(web, config)
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


def quantity(text: str) -> float:
    """A Kubernetes quantity such as 4Gi or 500M, in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    return float(number) * units.get(unit, 1)


def assert_bucket_settings(app: dict, config: dict) -> None:
    """The container reaches the bucket: where from the ConfigMap, credentials from the Secret."""
    assert {"S3_ENDPOINT", "S3_BUCKET", "S3_REGION"} <= config.keys()
    Settings(amqp_url="amqp://x", **{key.lower(): value for key, value in config.items()})
    variables = env(app)
    for name, key in (
        ("S3_ACCESS_KEY_ID", "access-key-id"),
        ("S3_SECRET_ACCESS_KEY", "secret-access-key"),
    ):
        assert variables[name] == {"secretKeyRef": {"name": "sd-webui-s3", "key": key}}


def worker_pod_checks(spec: dict, config: dict) -> None:
    """The worker pod, as a Deployment's, a StatefulSet's or a ScaledJob's: no sidecar, the
    bucket reached by the worker itself, a grace that covers the longest job, the model cache."""
    assert "initContainers" not in spec
    worker = container(spec, "worker")
    variables = env(worker)
    assert_bucket_settings(worker, config)
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    shutdown_grace = float(variables["SHUTDOWN_GRACE_S"])
    assert shutdown_grace >= longest_job_s(config)
    assert spec["terminationGracePeriodSeconds"] >= shutdown_grace + 10  # time to exit
    worker_mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert worker_mounts[variables["HF_HOME"]] == "model-cache"
    assert worker_mounts[config["IMAGES_DIR"]] == "images"


def seconds_per_unit() -> float:
    """A unit of work (jobs.job_units) on the slowest CPU measured: docs/performance.md's
    default fp32 row, seconds for one 512x512 image at 1 step (4 units)."""
    table = (REPO / "docs" / "performance.md").read_text()
    seconds = float(re.search(r"^default fp32 \(glibc\) +([0-9.]+)", table, re.M).group(1))
    return seconds / job_units(Job(prompt="x"))


def longest_job_s(config: dict) -> float:
    """What the worker may hold a job for: the largest job MAX_JOB_UNITS admits, with a 1.5x
    margin, and the upload's retries (docs/deploy.md#long-jobs-and-shutdown)."""
    settings = Settings(
        **{key.lower(): value for key, value in config.items() if key.startswith("MAX")}
    )
    assert settings.max_job_units > 0  # uncapped, no grace would be enough
    return settings.max_job_units * seconds_per_unit() * 1.5 + settings.s3_upload_retry_s


def measured_peak_gib() -> float:
    """The largest job's peak memory on the worker's path: docs/performance.md's job memory
    table (bench/job_memory.py), its one-by-one decode rows."""
    table = (REPO / "docs" / "performance.md").read_text()
    peaks = [float(row.split()[-2]) for row in table.splitlines() if " one by one " in row]
    assert peaks, "no job memory table in docs/performance.md"
    return max(peaks)


@pytest.mark.parametrize(
    "kustomization",
    ["base", "overlays/scaledobject", "overlays/scaledjob", "overlays/statefulset"],
)
def test_cpu_workers_request_the_measured_peak(kustomization: str) -> None:
    """The memory request covers the largest job's measured peak, so memory pressure on a node
    does not evict a busy worker, and the limit is above it."""
    [workload] = [o for o in workloads(build(kustomization)) if o["metadata"]["name"] == "worker"]
    resources = container(pod_template(workload)["spec"], "worker")["resources"]
    request, limit = (quantity(resources[kind]["memory"]) for kind in ("requests", "limits"))
    assert request >= measured_peak_gib() * 2**30
    assert limit > request


def worker_config(objects: list) -> dict:
    return generated(objects, "sd-webui-config")["data"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_mc_sidecars_left(kustomization: str) -> None:
    """The workers upload and the web app mirrors by themselves: no mc image, script or alias."""
    objects = build(kustomization)
    dump = yaml.safe_dump_all(objects)
    assert "minio/mc" not in dump and "MC_HOST" not in dump and "upload-complete-jobs" not in dump
    for workload in workloads(objects):
        assert "initContainers" not in pod_template(workload)["spec"], workload["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_broker_holds_a_job_longer_than_any_worker_may(kustomization: str) -> None:
    """RabbitMQ's consumer_timeout is above the worker's SHUTDOWN_GRACE_S (a job is held until
    its images are in the bucket), so the broker never takes a running job back."""
    objects = build(kustomization)
    rabbit = find(objects, "RabbitmqCluster", "rabbitmq")
    config = rabbit["spec"]["rabbitmq"]["additionalConfig"]
    timeout_s = int(re.search(r"^consumer_timeout = (\d+)$", config, re.M).group(1)) / 1000
    for workload in workloads(objects):
        if workload["metadata"]["name"] == "worker":
            grace = env(container(pod_template(workload)["spec"], "worker"))["SHUTDOWN_GRACE_S"]
            assert timeout_s > float(grace)


def test_base_worker() -> None:
    deployment = find(build("base"), "Deployment", "worker")
    worker_pod_checks(pod_template(deployment)["spec"], worker_config(build("base")))
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
    worker_pod_checks(pod_template(deployment)["spec"], worker_config(objects))


@pytest.mark.parametrize("kustomization", ["base", "overlays/scaledobject", "overlays/gpu"])
def test_worker_rollouts_stop_no_busy_worker_early(kustomization: str) -> None:
    """A rollout adds a new worker before it stops an old one, and stops it with a grace that
    lets it finish the job in hand."""
    deployment = find(build(kustomization), "Deployment", "worker")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_model_cache_claim_names_a_storage_class() -> None:
    """ReadWriteMany is no default class's: the claim names one (a placeholder to set)."""
    claim = find(build("base"), "PersistentVolumeClaim", "model-cache")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"]


def test_statefulset_overlay() -> None:
    """Workers with a ReadWriteOnce model cache each: a StatefulSet that KEDA scales, its pod
    the scaledobject overlay's worker pod with the cache from the claim template."""
    objects = build("overlays/statefulset")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "worker") not in kinds
    assert ("PersistentVolumeClaim", "model-cache") not in kinds
    statefulset = find(objects, "StatefulSet", "worker")
    scaled = find(objects, "ScaledObject", "worker")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "worker", "kind": "StatefulSet"}
    spec = statefulset["spec"]
    assert "replicas" not in spec  # KEDA owns it
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "model-cache"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert selects(spec["selector"], pod_template(statefulset)["metadata"]["labels"])
    worker_pod_checks(pod_template(statefulset)["spec"], worker_config(objects))
    deployment = find(build("overlays/scaledobject"), "Deployment", "worker")
    expected = copy.deepcopy(pod_template(deployment))
    expected["spec"]["volumes"] = [
        volume for volume in expected["spec"]["volumes"] if volume["name"] != "model-cache"
    ]
    assert pod_template(statefulset) == expected


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
    worker_pod_checks(spec, worker_config(objects))
    # A changed ScaledJob leaves running Jobs be; the deadline leaves room for the longest job
    # after the model load (the startup probe's window).
    assert scaled["spec"]["rollout"]["strategy"] == "gradual"
    startup = container(spec, "worker")["startupProbe"]
    startup_s = startup["periodSeconds"] * startup["failureThreshold"]
    shutdown_grace = float(env(container(spec, "worker"))["SHUTDOWN_GRACE_S"])
    assert job["activeDeadlineSeconds"] >= startup_s + shutdown_grace
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
    worker_pod_checks(spec, worker_config(objects))


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


def test_the_readmes_retention_snippet_changes_the_setting(tmp_path) -> None:
    """README.md's snippet, put in an overlay of the scaledobject one, builds and sets 90 days
    with every other setting kept."""
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"```yaml\n(configMapGenerator:.*?S3_RETENTION_DAYS.*?)```", readme, re.S)
    assert snippet, "no retention snippet in README.md"
    overlay = yaml.safe_load(snippet.group(1))
    overlay["resources"] = [os.path.relpath(K8S / "overlays" / "scaledobject", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [kubectl() or "kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    config = worker_config([o for o in yaml.safe_load_all(result.stdout) if o])
    assert config["S3_RETENTION_DAYS"] == "90"
    assert {key: value for key, value in config.items() if key != "S3_RETENTION_DAYS"} == {
        key: value
        for key, value in worker_config(build("overlays/scaledobject")).items()
        if key != "S3_RETENTION_DAYS"
    }


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_workers_run_the_safety_checker_as_the_old_system_did(kustomization: str) -> None:
    config = worker_config(build(kustomization))
    assert Settings(sd_safety_checker=config["SD_SAFETY_CHECKER"]).sd_safety_checker
