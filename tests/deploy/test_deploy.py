"""What can be checked of the deploy files without a cloud: Ray's own schema accepts the cluster
config; every Kubernetes manifest passes Kubernetes' schemas or KubeRay's CRD with unknown fields
rejected, and KubeRay's own rules; the nightly job's rights are exactly what its kubectl call needs;
every command line is one the CLI accepts; versions agree with the pinned ones."""

import copy
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from jobs.cli import build_parser
from jobs.options import build_config
from pipeline import __version__
from tests.deploy import manifests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
KUBERAY = os.path.join(ROOT, "deploy", "kuberay")


def pinned(package: str) -> str:
    """The version the lock (constraints.txt) pins."""
    with open(os.path.join(ROOT, "constraints.txt")) as handle:
        found = [line.split("==")[1].strip() for line in handle if re.match(rf"{re.escape(package)}==", line, flags=re.I)]
    assert len(found) == 1, package
    return found[0]


def load(*parts) -> list:
    with open(os.path.join(ROOT, *parts)) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def accepted(command: str):
    """The parsed arguments of a `disillusion ...` command line, or a test failure."""
    words = shlex.split(command)
    assert words[0] == "disillusion", command
    try:
        return build_parser().parse_args(words[1:])
    except SystemExit:  # argparse reports and exits on a bad command line
        pytest.fail(f"the CLI rejects: {command}")


def test_the_cluster_config_passes_rays_own_validation():
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    [config] = load("ray_cluster.yaml")
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as handle:
        import jsonschema

        jsonschema.validate(config, json.load(handle))
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # control plane and driver only; tasks run beside the actors
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] > t.get("min_workers", 0) for t in gpu_types)  # autoscaling
    # The autoscaler on the head launches workers: the head's profile is not the workers' (S3 only).
    profiles = {name: t["node_config"]["IamInstanceProfile"]["Arn"] for name, t in types.items()}
    assert len(set(profiles.values())) == 2
    for node in types.values():
        assert node["node_config"]["SubnetIds"] and node["node_config"]["SecurityGroupIds"]
    assert config["docker"]["image"].endswith(f":{__version__}")
    [setup] = config["setup_commands"]
    assert f"torch=={pinned('torch')}" in setup and setup.startswith("disillusion --version") and "import pipeline" not in setup


def test_the_dockerfile_installs_dependencies_before_the_code_on_the_pinned_ray_and_torch():
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as handle:
        text = handle.read()
    [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert base == f"rayproject/ray:{pinned('ray')}-py311-gpu"
    assert f'"torch=={pinned("torch")}"' in text
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, flags=re.M)
    for line in copied:
        for path in line.split():
            assert os.path.exists(os.path.join(ROOT, path)), path
    # A change of code must not reinstall the dependencies: they come from pyproject.toml alone, before any source.
    first_source = min(text.index(f"COPY --chown=ray:users {d}") for d in ("pipeline", "jobs", "README.md"))
    assert text.index("pip install --no-cache-dir -r /tmp/requirements.txt -c constraints.txt") < first_source
    assert "pip install --no-cache-dir --no-deps ." in text and "disillusion --version" in text
    # The context holds what the image copies, nothing else.
    with open(os.path.join(ROOT, ".dockerignore")) as handle:
        ignore = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {"!pyproject.toml", "!constraints.txt", "!README.md", "!pipeline/", "!jobs/"} <= set(ignore)


@pytest.mark.parametrize("path", ["deploy/kuberay/rayjob.yaml", "deploy/kuberay/cronjob.yaml", "deploy/kuberay/serviceaccount.yaml"])
def test_every_manifest_passes_its_schema_with_unknown_fields_rejected(path):
    from tests.deploy.manifests import problems

    for document in manifests.load(os.path.join(ROOT, path)):
        assert problems(document) == [], (document["kind"], problems(document))


def test_the_schemas_catch_what_they_must():
    """The validation can fail: a misspelt field, a wrong type and an unknown enum value are caught in
    the RayJob (KubeRay's CRD), in its pod templates and in a core kind."""
    from tests.deploy.manifests import problems

    [job] = manifests.load(os.path.join(KUBERAY, "rayjob.yaml"))
    for change in (lambda j: j["spec"].update(shutdownAfterJobFinish=True),
                   lambda j: j["spec"].update(preRunningDeadlineSeconds="an hour"),
                   lambda j: j["spec"]["deletionStrategy"]["deletionRules"][0].update(policy="DeleteEverything"),
                   lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=3),
                   lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"].update(serviceAccount_Name="x")):
        broken = copy.deepcopy(job)
        change(broken)
        assert problems(broken), broken
    cron = {d["kind"]: d for d in manifests.load(os.path.join(KUBERAY, "cronjob.yaml"))}["CronJob"]
    broken = copy.deepcopy(cron)
    broken["spec"]["concurencyPolicy"] = "Forbid"
    assert problems(broken)


def test_the_rayjob_runs_sanitize_then_export_and_frees_its_gpus_when_done():
    [job] = manifests.load(os.path.join(KUBERAY, "rayjob.yaml"))
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == pinned("ray")
    assert spec["preRunningDeadlineSeconds"] > 0 and spec["backoffLimit"] == 0
    # KubeRay splices the entrypoint into its submitter's shell command: one `sh -c` word, a valid script.
    shell, flag, script = shlex.split(spec["entrypoint"])
    assert (shell, flag) == ("sh", "-c")
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    commands = [accepted(c.strip()) for c in re.split(r";|\|\||\bthen\b", script) if c.strip().startswith("disillusion ")]
    sanitize, export = commands
    assert (sanitize.job, export.job) == ("sanitize", "export") and export.input == sanitize.output
    assert sanitize.actors[0] >= 1 and sanitize.actors[1] == spec["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"]
    # The settings file the pods mount is the one in the repository: it must resolve to a config.
    mount = "/etc/disillusion/"
    assert sanitize.config.startswith(mount)
    sanitize.config = os.path.join(KUBERAY, sanitize.config[len(mount):])
    config = build_config(sanitize)
    assert config.models.reconstructor.startswith("vae:s3://") and config.models.encoder.startswith("clip:s3://")

    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["object-spilling-directory"]
    templates = [head["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    containers = [t["spec"]["containers"][0] for t in templates]
    assert {c["image"] for c in containers} == {f"ghcr.io/your-org/disillusion:{__version__}"}
    [account] = manifests.load(os.path.join(KUBERAY, "serviceaccount.yaml"))
    assert {t["spec"]["serviceAccountName"] for t in templates} == {account["metadata"]["name"]}  # IRSA / Pod Identity
    for template, container in zip(templates, containers):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert "/dev/shm" in mounts and volumes["shm"]["emptyDir"]["medium"] == "Memory"  # the object store's room
        env = {e["name"]: e for e in container["env"]}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # from a secret only, and optional (IRSA serves instead)
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["optional"] is True
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1 and int(group["rayStartParams"]["num-gpus"]) == int(limits["nvidia.com/gpu"])
        assert int(limits["cpu"]) == int(group["rayStartParams"]["num-cpus"]) <= 6  # an 8-vCPU node keeps room for its daemons
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_rayjob_deletion_rules_pass_kuberays_own_checks():
    """What KubeRay 1.7 checks beyond the schema (ray-operator/controllers/ray/utils/validation.go):
    deletionRules exclude shutdownAfterJobFinishes and a TTL; one rule per (condition, policy); per
    condition, Workers <= Cluster <= Self in TTL; no DeleteWorkers with autoscaling. And what this
    deployment needs of them: the cluster goes at once whatever the outcome, the RayJob (and with it
    the name the CronJob creates) later."""
    [job] = manifests.load(os.path.join(KUBERAY, "rayjob.yaml"))
    spec = job["spec"]
    rules = spec["deletionStrategy"]["deletionRules"]
    assert not spec.get("shutdownAfterJobFinishes") and not spec.get("ttlSecondsAfterFinished")
    order = {"DeleteWorkers": 0, "DeleteCluster": 1, "DeleteSelf": 2}
    by_condition: dict = {}
    for rule in rules:
        condition = rule["condition"]
        assert ("jobStatus" in condition) != ("jobDeploymentStatus" in condition)
        assert not (rule["policy"] == "DeleteWorkers" and spec["rayClusterSpec"].get("enableInTreeAutoscaling"))
        key = (condition.get("jobStatus"), condition.get("jobDeploymentStatus"))
        assert rule["policy"] not in by_condition.setdefault(key, {})
        by_condition[key][rule["policy"]] = condition.get("ttlSeconds", 0)
    for policies in by_condition.values():
        ttls = [ttl for _, ttl in sorted(policies.items(), key=lambda item: order[item[0]])]
        assert ttls == sorted(ttls)
    for outcome in [("SUCCEEDED", None), ("FAILED", None), (None, "Failed")]:
        assert by_condition[outcome]["DeleteCluster"] == 0 and by_condition[outcome]["DeleteSelf"] < 24 * 3600


KUBECTL_VERBS = {"create": {"create"}, "apply": {"get", "create", "patch"}, "delete": {"delete"}, "get": {"get", "list"}}
RESOURCES = {("ray.io/v1", "RayJob"): ("ray.io", "rayjobs")}


def test_the_cronjob_creates_the_rayjob_nightly_with_exactly_the_rights_its_kubectl_call_needs():
    docs = {doc["kind"]: doc for doc in manifests.load(os.path.join(KUBERAY, "cronjob.yaml"))}
    cron = docs["CronJob"]
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    [container] = pod["containers"]
    assert container["image"].startswith("registry.k8s.io/kubectl:v1.")  # published by the Kubernetes project, per release
    # No shell, no status to read: the command is one kubectl call on the mounted RayJob.
    kubectl, verb, flag, path = container["command"]
    assert (kubectl, verb, flag) == ("kubectl", "create", "-f")
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert os.path.dirname(path) == mount["mountPath"] and volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == "disillusion-rayjob" and os.path.basename(path) == "rayjob.yaml"
    created = manifests.load(os.path.join(KUBERAY, "rayjob.yaml"))
    # A fixed name is what keeps two runs apart: `create` refuses a second RayJob while one exists.
    assert all("name" in d["metadata"] and "generateName" not in d["metadata"] for d in created)
    needed = {(*RESOURCES[(d["apiVersion"], d["kind"])], v) for d in created for v in KUBECTL_VERBS[verb]}
    granted = {(group, resource, v) for rule in docs["Role"]["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for v in rule["verbs"]}
    assert granted == needed  # no more, no less
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"]}]


def test_every_command_line_in_the_deploy_docs_is_accepted():
    from jobs.cli import JOBS

    job = "|".join(re.escape(j.NAME) for j in JOBS)
    commands = []
    for path in ("ray_cluster.yaml", "deploy/README.md", "deploy/kuberay/settings.yaml"):  # (the RayJob's: above)
        with open(os.path.join(ROOT, path)) as handle:
            text = re.sub(r"\\\n\s*", " ", handle.read())  # shell line continuations
        # Command lines, not prose mentions of a job: those with options.
        commands += [c for c in re.findall(rf"\bdisillusion (?:{job})\b[^\n`]*", text) if " --" in c]
    assert len(commands) >= 5
    for command in commands:
        accepted(command.strip())
