"""The cluster manifests in cluster/ stay valid and in step with the code.

- every YAML file parses;
- the Ray cluster launcher config validates against Ray's own autoscaler JSON schema
  (ray/autoscaler/ray-schema.json from the installed ray package);
- the RayJob's entrypoint is a valid `jobs.curate` command line (parsed by the job's own
  parser), and its GPU group, weights volume and credentials match what the command needs;
- the RayService's serveConfigV2 validates against Ray Serve's config schema, its import
  path imports, its deployments exist in jobs/serve.py and mirror cluster/serve.yaml;
- the runtime_env example is accepted by Ray and installs only the project's dependencies.

No network, no Ray cluster: a few seconds.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
RAYSERVICE = CLUSTER / "kuberay-rayservice.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
SERVE_YAML = CLUSTER / "serve.yaml"
MINE = [LAUNCHER, RAYJOB, RAYSERVICE, RUNTIME_ENV]

# Field names of KubeRay's ray.io/v1 CRDs (checked against KubeRay v1.7's CRD schemas),
# so that a misspelt field fails here instead of being silently pruned by the API server.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
    "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy",
    "metadata", "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML",
    "shutdownAfterJobFinishes", "submissionMode", "submitterConfig", "submitterPodTemplate",
    "suspend", "ttlSecondsAfterFinished",
}
RAYSERVICE_SPEC_FIELDS = {
    "deploymentUnhealthySecondThreshold", "excludeHeadPodFromServeSvc", "managedBy",
    "rayClusterConfig", "rayClusterDeletionDelaySeconds", "serveConfigV2", "serveService",
    "serviceUnhealthySecondThreshold", "suspend", "upgradeStrategy",
}
RAYCLUSTER_SPEC_FIELDS = {
    "authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
    "headGroupSpec", "headServiceAnnotations", "managedBy", "networkPolicy", "rayVersion",
    "suspend", "tlsOptions", "upgradeStrategy", "workerGroupSpecs",
}
HEAD_GROUP_FIELDS = {"enableIngress", "headService", "rayStartParams", "resources", "serviceType", "template"}
WORKER_GROUP_FIELDS = {
    "groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts",
    "priority", "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template",
}
AUTOSCALER_OPTION_FIELDS = {
    "env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy", "resources",
    "securityContext", "upscalingMode", "version", "volumeMounts",
}


def load_docs(path: Path) -> list[dict[str, Any]]:
    """All YAML documents of a file (empty ones dropped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_one(path: Path, kind: str | None = None) -> dict[str, Any]:
    """The single document of a file, or its one document of the given `kind`."""
    docs = load_docs(path)
    if kind is not None:
        docs = [d for d in docs if d.get("kind") == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind or 'YAML'} document, found {len(docs)}"
    return docs[0]


def ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def ray_containers(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{group name: pod spec} for the head ('head') and every worker group of a RayCluster spec."""
    groups = {"head": cluster_spec["headGroupSpec"]["template"]["spec"]}
    for g in cluster_spec["workerGroupSpecs"]:
        groups[g["groupName"]] = g["template"]["spec"]
    return groups


def gpu_groups(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        g for g in cluster_spec["workerGroupSpecs"]
        if str(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")) == "1"
    ]


def check_cluster_spec(spec: dict[str, Any], where: str) -> None:
    """Field names and the shape framesift needs: autoscaling, head without CPUs for tasks,
    a CPU group and a GPU group, AWS credentials from a Secret on every Ray container."""
    assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, f"{where}: unknown RayCluster fields {set(spec) - RAYCLUSTER_SPEC_FIELDS}"
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_OPTION_FIELDS
    assert set(spec["headGroupSpec"]) <= HEAD_GROUP_FIELDS
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    for g in spec["workerGroupSpecs"]:
        assert set(g) <= WORKER_GROUP_FIELDS, f"{where}: unknown worker group fields {set(g) - WORKER_GROUP_FIELDS}"
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]
    for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        # rayStartParams is a map of strings in the CRD: an unquoted number is rejected.
        assert all(isinstance(v, str) for v in g.get("rayStartParams", {}).values())
    gpus = gpu_groups(spec)
    assert len(gpus) == 1 and gpus[0]["minReplicas"] >= 1, (
        f"{where}: one GPU group with minReplicas >= 1 (the GPUs are counted when the app starts)"
    )
    assert len(spec["workerGroupSpecs"]) >= 2, f"{where}: a CPU group besides the GPU group"
    for group, pod in ray_containers(spec).items():
        env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in env[name]["valueFrom"], f"{where}/{group}: {name} not from a Secret"


def mount_paths(pod: dict[str, Any]) -> list[str]:
    return [m["mountPath"] for m in pod["containers"][0].get("volumeMounts", [])]


# --------------------------------------------------------------------------- every file


def test_the_cluster_files_exist() -> None:
    for path in [*MINE, CLUSTER / "README.md"]:
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path.name} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path.name}: every document must be a mapping"


def test_readme_names_every_manifest() -> None:
    text = (CLUSTER / "README.md").read_text()
    for path in MINE:
        assert path.name in text, f"cluster/README.md does not mention {path.name}"
    assert "see benchmarks/RESULTS.md" in text


# --------------------------------------------------------------------------- launcher


def test_launcher_config_validates_against_rays_schema() -> None:
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    cfg = load_one(LAUNCHER)
    for key in ("cluster_name", "max_workers", "provider", "available_node_types", "head_node_type"):
        assert key in cfg, f"ray-cluster.yaml lacks {key}"
    jsonschema.validate(cfg, ray_schema())
    validate_config(fillout_defaults(cfg))  # what `ray up` runs, after merging AWS defaults


def test_launcher_schema_check_catches_mistakes() -> None:
    cfg = load_one(LAUNCHER)
    bad_resources = copy.deepcopy(cfg)
    next(iter(bad_resources["available_node_types"].values()))["resources"] = {"GPU": "one"}
    typo = copy.deepcopy(cfg)
    typo["max_worker"] = typo.pop("max_workers")
    for broken in (bad_resources, typo):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, ray_schema())


def test_launcher_node_types() -> None:
    cfg = load_one(LAUNCHER)
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0, "the head should only run the driver"
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    gpu = {n: t for n, t in workers.items() if t["node_config"]["InstanceType"].split(".")[0] in ("g5", "g6")}
    cpu = {n: t for n, t in workers.items() if n not in gpu}
    assert len(gpu) == 1 and cpu, "one GPU (g5/g6) worker type and a CPU worker type"
    (gpu_type,) = gpu.values()
    assert gpu_type["min_workers"] >= 1, "the job counts GPUs when it starts: keep one GPU node up"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]
    assert any("FRAMESIFT_PIP_SPEC" in c for c in cfg["setup_commands"]), "framesift is installed on every node"


# --------------------------------------------------------------------------- RayJob


def curate_argv(entrypoint: str) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "jobs.curate"], f"entrypoint is not `python -m jobs.curate`: {entrypoint}"
    return argv[3:]


def test_rayjob_entrypoint_is_a_valid_curate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.curate import build_parser, config_from_args

    job = load_one(RAYJOB, "RayJob")
    argv = curate_argv(job["spec"]["entrypoint"])
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"the RayJob entrypoint is not a valid jobs.curate command line:\n{capsys.readouterr().err}")
    assert ns.input and ns.input.startswith("s3://"), "INPUT should be an s3:// URI"
    assert ns.output and ns.output.startswith("s3://"), "OUTPUT should be an s3:// URI"
    local = {ns.input: str(tmp_path / "in"), ns.output: str(tmp_path / "out")}
    cfg = config_from_args([local.get(a, a) for a in argv])  # validates every option
    assert cfg.input == local[ns.input] and cfg.output == local[ns.output]

    cluster = job["spec"]["rayClusterSpec"]
    (gpu,) = gpu_groups(cluster)
    assert cfg.embedder == "clip"
    assert cfg.embed_concurrency == (1, gpu["maxReplicas"]), (
        "--embed-concurrency should let the GPU actor pool grow to the GPU group's maxReplicas"
    )
    # --weights must exist on the head (the driver checks it) and on the GPU pods (actors).
    assert cfg.weights
    pods = ray_containers(cluster)
    for group in ("head", gpu["groupName"]):
        assert any(cfg.weights.startswith(p.rstrip("/") + "/") for p in mount_paths(pods[group])), (
            f"--weights {cfg.weights} is not on a volume mounted in the {group} pods"
        )


def test_rayjob_entrypoint_check_catches_a_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.config import ConfigError
    from jobs.curate import config_from_args

    argv = curate_argv(load_one(RAYJOB, "RayJob")["spec"]["entrypoint"])
    with pytest.raises(SystemExit):
        config_from_args([*argv, "--no-such-flag"])
    with pytest.raises(ConfigError):
        config_from_args([*argv, "--method", "no-such-method"])
    capsys.readouterr()


def test_rayjob_spec() -> None:
    from ray.runtime_env import RuntimeEnv

    job = load_one(RAYJOB, "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, f"unknown RayJob fields {set(spec) - RAYJOB_SPEC_FIELDS}"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    check_cluster_spec(spec["rayClusterSpec"], "RayJob")


# --------------------------------------------------------------------------- RayService


def serve_app(config: dict[str, Any]) -> Any:
    """The one application of a Serve config, validated by Ray Serve's own schema."""
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    assert len(schema.applications) == 1
    # Serve's schema ignores unknown deployment options; a misspelt one must fail here.
    (raw,) = config["applications"]
    unknown = set(raw) - set(ServeApplicationSchema.model_fields)
    assert not unknown, f"unknown application options {unknown}"
    for d in raw.get("deployments", []):
        unknown = set(d) - set(DeploymentSchema.model_fields)
        assert not unknown, f"deployment {d.get('name')}: unknown options {unknown}"
    return schema.applications[0]


def rayservice_app() -> Any:
    svc = load_one(RAYSERVICE, "RayService")
    return serve_app(yaml.safe_load(svc["spec"]["serveConfigV2"]))


def test_rayservice_spec() -> None:
    svc = load_one(RAYSERVICE, "RayService")
    assert svc["apiVersion"] == "ray.io/v1"
    spec = svc["spec"]
    assert set(spec) <= RAYSERVICE_SPEC_FIELDS, f"unknown RayService fields {set(spec) - RAYSERVICE_SPEC_FIELDS}"
    assert isinstance(spec["serveConfigV2"], str), "serveConfigV2 is a YAML string"
    check_cluster_spec(spec["rayClusterConfig"], "RayService")


def test_rayservice_serve_config() -> None:
    app = rayservice_app()
    assert app.import_path == "jobs.serve:app"
    (gpu,) = gpu_groups(load_one(RAYSERVICE, "RayService")["spec"]["rayClusterConfig"])
    for d in app.deployments:
        gpus = (d.ray_actor_options or {}).get("num_gpus", 0) if isinstance(d.ray_actor_options, dict) else 0
        if gpus and isinstance(d.autoscaling_config, dict):
            assert d.autoscaling_config["max_replicas"] * gpus <= gpu["maxReplicas"], d.name


def test_rayservice_serve_config_check_catches_mistakes() -> None:
    from pydantic import ValidationError

    svc = load_one(RAYSERVICE, "RayService")
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    wrong_type = copy.deepcopy(config)
    wrong_type["applications"][0]["deployments"][0]["max_ongoing_requests"] = "lots"
    with pytest.raises(ValidationError):
        serve_app(wrong_type)
    typo = copy.deepcopy(config)
    typo["applications"][0]["deployments"][0]["num_replica"] = 2
    with pytest.raises(AssertionError, match="num_replica"):
        serve_app(typo)


def test_rayservice_options_are_a_valid_service_config() -> None:
    from jobs.serve_config import ServeConfig

    cm = load_one(RAYSERVICE, "ConfigMap")
    (text,) = cm["data"].values()
    cfg = ServeConfig.from_dict(yaml.safe_load(text)).validate()
    assert cfg.allowed_prefixes, "the service must name the prefixes it may read"
    env_vars = (rayservice_app().runtime_env or {}).get("env_vars", {})
    mounted = env_vars.get("FRAMESIFT_SERVE_CONFIG", "")
    assert mounted.endswith("/" + next(iter(cm["data"]))), "FRAMESIFT_SERVE_CONFIG names the ConfigMap's file"


def test_rayservice_mirrors_serve_yaml() -> None:
    assert SERVE_YAML.exists(), "cluster/serve.yaml is the service's deploy config"
    ours = rayservice_app()
    theirs = serve_app(load_one(SERVE_YAML))
    assert ours.import_path == theirs.import_path
    assert {d.name for d in ours.deployments} == {d.name for d in theirs.deployments}


def test_rayservice_import_path_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app_cfg = rayservice_app()
    module_name, attr = app_cfg.import_path.split(":")
    assert importlib.util.find_spec(module_name), f"import path {app_cfg.import_path} names no module"
    from ray import serve

    # Build it as Serve would, offline, with the training-free embedder (no CLIP weights here).
    options = tmp_path / "serve-options.yaml"
    options.write_text("embedder: features\n")
    monkeypatch.setenv("FRAMESIFT_SERVE_CONFIG", str(options))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FRAMESIFT_CLIP_WEIGHTS", raising=False)
    module = importlib.import_module(module_name)
    app = getattr(module, attr)
    assert isinstance(app, serve.Application), f"{app_cfg.import_path} is not a Serve application"
    defined = {d.name for d in vars(module).values() if isinstance(d, serve.Deployment)}
    configured = {d.name for d in app_cfg.deployments}
    assert configured <= defined, f"serveConfigV2 configures deployments {configured - defined} that {module_name} lacks"


# --------------------------------------------------------------------------- runtime_env


def project_dependencies() -> set[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {Requirement(d).name.lower().replace("_", "-") for d in deps}


def test_runtime_env_is_accepted_by_ray() -> None:
    from ray.runtime_env import RuntimeEnv

    env = load_one(RUNTIME_ENV)
    RuntimeEnv(**env)
    known = {"working_dir", "excludes", "pip", "env_vars", "py_modules", "conda", "uv", "config"}
    assert set(env) <= known, f"unexpected runtime_env keys {set(env) - known}"
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values())
    assert "AWS_SECRET_ACCESS_KEY" not in env.get("env_vars", {}), "no secrets in a runtime env"


def test_runtime_env_installs_only_project_dependencies() -> None:
    env = load_one(RUNTIME_ENV)
    pip = env["pip"]["packages"] if isinstance(env["pip"], dict) else env["pip"]
    names = {Requirement(p).name.lower().replace("_", "-") for p in pip}
    assert "ray" not in names, "the job must use the cluster's own Ray"
    assert names <= project_dependencies(), f"not in pyproject.toml: {names - project_dependencies()}"


# --------------------------------------------------------------------------- resources vs code

# What the launcher's instance types have (AWS): vCPUs, memory (GiB), GPUs.
INSTANCE_TYPES = {"m6i.2xlarge": (8, 32, 0), "c6i.8xlarge": (32, 64, 0), "g5.2xlarge": (8, 32, 1),
                  "g6.2xlarge": (8, 32, 1)}
RAY_MEMORY_SHARE = 0.7  # Ray's `memory` resource: what the object store (30% by default) leaves


def k8s_quantity(value: str) -> float:
    """A Kubernetes quantity ("16", "500m", "32Gi") as a number (bytes for memory)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    for suffix, factor in units.items():
        if str(value).endswith(suffix):
            return float(str(value)[: -len(suffix)]) * factor
    return float(value)


def check_requests_fit(nodes: dict[str, tuple[float, float, float]], argv: list[str], where: str) -> None:
    """Every stage's request, as the code makes it on a cluster of these `nodes` ({name:
    (CPUs, memory bytes, GPUs)}; the head has 0 CPUs), fits some node: the embedding actor a
    GPU node, decode and finalize a CPU node, and a node's decode tasks are bounded by its
    CPUs, not by Ray's memory resource."""
    from jobs.curate import config_from_args, plan_stages
    from operators.resources import ClusterShape

    cfg = config_from_args(argv)
    workers = {n: r for n, r in nodes.items() if r[0] > 0}
    shape = ClusterShape.of(max(r[0] for r in workers.values()), sum(r[2] for r in workers.values()),
                            cfg.embed_device)
    plan = plan_stages(shape, cfg, with_model=cfg.embedder != "features")
    if plan.embed is not None:
        gpu_nodes = {n: r for n, r in workers.items() if r[2] >= plan.embed.gpus > 0} if plan.embed.gpus else workers
        assert gpu_nodes, f"{where}: no node has a GPU for the embedding actor"
        assert all(r[0] >= plan.embed.cpus for r in gpu_nodes.values()), f"{where}: the actor's CPUs do not fit"
    for name, (cpus, memory, _) in workers.items():
        assert cpus >= plan.decode.cpus and cpus >= plan.finalize.cpus, f"{where}/{name}: a decode task does not fit"
        per_node = int(cpus / plan.decode.cpus)
        assert per_node * (plan.decode.memory or 0) <= RAY_MEMORY_SHARE * memory, (
            f"{where}/{name}: {per_node} decode tasks of {plan.decode.memory / 2**20:.0f} MiB exceed Ray's memory")


def check_head_holds_the_assemblers(head_cores: float, nodes: dict[str, tuple[float, float, float]],
                                    argv: list[str], where: str) -> None:
    """The head (Ray CPU 0) has a core for the driver and one for each assembler actor the
    job starts on it (jobs.assembly: one per 64 CPUs of the cluster at its largest)."""
    from jobs.assembly import assembler_count
    from jobs.curate import config_from_args

    cfg = config_from_args(argv)
    actors = assembler_count(cfg.assemblers, sum(r[0] for r in nodes.values()))
    assert head_cores >= actors + 1, f"{where}: the head's {head_cores:g} cores cannot hold the driver and {actors} assemblers"


def test_rayjob_groups_fit_the_codes_requests() -> None:
    job = load_one(RAYJOB, "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    nodes = {"head": (0.0, 16 * 2**30, 0.0)}
    for g in cluster["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        # an autoscaled group at its largest
        for i in range(max(1, g["maxReplicas"])):
            nodes[f"{g['groupName']}-{i}"] = (k8s_quantity(limits["cpu"]), k8s_quantity(limits["memory"]),
                                              k8s_quantity(limits.get("nvidia.com/gpu", 0)))
    argv = curate_argv(job["spec"]["entrypoint"])
    check_requests_fit(nodes, ["in", "out", *argv[2:]], "RayJob")
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    check_head_holds_the_assemblers(k8s_quantity(head["cpu"]), nodes, ["in", "out", *argv[2:]], "RayJob")


def test_launcher_node_types_fit_the_codes_requests() -> None:
    cfg = load_one(LAUNCHER)
    nodes = {}
    for name, t in cfg["available_node_types"].items():
        cpus, mem_gib, gpus = INSTANCE_TYPES[t["node_config"]["InstanceType"]]
        cpus = t.get("resources", {}).get("CPU", cpus)
        for i in range(max(1, t.get("max_workers", 1))):
            nodes[f"{name}-{i}"] = (float(cpus), mem_gib * 2**30, float(gpus))
    argv = ["in", "out", "--embedder", "clip", "--embed-concurrency", "1,4"]  # as cluster/README.md runs it
    check_requests_fit(nodes, argv, "ray-cluster.yaml")
    head = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]["InstanceType"]
    check_head_holds_the_assemblers(INSTANCE_TYPES[head][0], nodes, argv, "ray-cluster.yaml")


def test_the_head_check_catches_a_head_too_small_for_the_assemblers() -> None:
    nodes = {f"w{i}": (64.0, 2**38, 0.0) for i in range(8)}  # 512 CPUs: 8 assemblers
    check_head_holds_the_assemblers(9, nodes, ["in", "out"], "big")
    with pytest.raises(AssertionError, match="cannot hold the driver and 8 assemblers"):
        check_head_holds_the_assemblers(4, nodes, ["in", "out"], "big")


def test_the_resource_check_catches_a_node_too_small() -> None:
    with pytest.raises(AssertionError, match="exceed Ray's memory"):
        check_requests_fit({"head": (0, 2**34, 0), "w": (16, 4 * 2**30, 0)}, ["in", "out", "--embedder", "features"],
                           "small")
    with pytest.raises(AssertionError, match="no node has a GPU"):
        check_requests_fit({"head": (0, 2**34, 0), "w": (16, 2**36, 0)},
                           ["in", "out", "--embedder", "clip", "--embed-device", "gpu"], "no GPU")


def test_a_fixed_embedding_pool_starts_at_full_size() -> None:
    """--embed-concurrency N,N starts all N actors at once (Ray Data starts a pool at its
    initial size, min_size unless given); 1,N starts one and adds the others one by one."""
    from jobs.curate import _actor_pool

    full = _actor_pool((4, 4))
    assert (full.min_size, full.max_size, full.initial_size) == (4, 4, 4)
    grows = _actor_pool((1, 4))
    assert (grows.min_size, grows.max_size, grows.initial_size) == (1, 4, 1)
    assert _actor_pool(3).initial_size == 3
