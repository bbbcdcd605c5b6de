"""What can be checked of the deploy files without a cloud: they parse, Ray's own schema accepts the
cluster config, every command line is one the CLI accepts, versions agree with the pinned ones, and
the GPU worker groups declare their GPUs."""

import json
import os
import re
import shlex
import tomllib

import pytest
import yaml

from jobs.cli import build_parser
from jobs.sanitize import build_config
from pipeline import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
KUBERAY = os.path.join(ROOT, "deploy", "kuberay")


def pinned(package: str) -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    found = [d.split("==")[1].split(";")[0].strip() for d in dependencies if re.match(rf"{re.escape(package)}(\[.*\])?==", d)]
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
    assert "GPU" not in types[config["head_node_type"]]["resources"]
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] > t.get("min_workers", 0) for t in gpu_types)  # autoscaling
    assert config["docker"]["image"].endswith(f":{__version__}")
    assert any(f"torch=={pinned('torch')}" in command for command in config["setup_commands"])


def test_the_dockerfile_builds_on_the_pinned_ray_with_the_pinned_torch():
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as handle:
        text = handle.read()
    [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert base == f"rayproject/ray:{pinned('ray')}-py311-gpu"
    assert f'"torch=={pinned("torch")}"' in text
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, flags=re.M)
    for line in copied:
        for path in line.split():
            assert os.path.exists(os.path.join(ROOT, path)), path


def test_the_rayjob_runs_a_real_sanitize_on_an_ephemeral_gpu_cluster():
    [job] = load("deploy", "kuberay", "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["rayClusterSpec"]["rayVersion"] == pinned("ray")
    args = accepted(spec["entrypoint"])
    assert args.job == "sanitize"
    # The settings file the pods mount is the one in the repository: it must resolve to a config.
    mount = "/etc/disillusion/"
    assert args.config.startswith(mount)
    args.config = os.path.join(KUBERAY, args.config[len(mount):])
    config = build_config(args)
    assert config.models.reconstructor.startswith("vae:s3://") and config.models.encoder.startswith("clip:s3://")

    containers = [spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]]
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    containers += [g["template"]["spec"]["containers"][0] for g in groups]
    assert {c["image"] for c in containers} == {f"ghcr.io/your-org/disillusion:{__version__}"}
    for group in groups:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert int(group["rayStartParams"]["num-gpus"]) == int(limits["nvidia.com/gpu"])
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in containers:  # credentials from secrets only
        env = {e["name"]: e for e in container["env"]}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]


def test_the_cronjob_creates_the_rayjob_nightly_with_the_rights_it_needs():
    docs = {doc["kind"]: doc for doc in load("deploy", "kuberay", "cronjob.yaml")}
    cron = docs["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    script = pod["containers"][0]["command"][-1]
    mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
    assert f"kubectl create -f {mount}/rayjob.yaml" in script
    [rule] = docs["Role"]["rules"]
    assert rule["apiGroups"] == ["ray.io"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"]
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]


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
