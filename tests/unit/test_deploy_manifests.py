"""The deployment files in deploy/ pass the validators made for them, and run the commands of ``radtrace serve``.

Validators (installed by .ci/run and the dev dependency group; a missing one fails, never skips):
docker-compose for deploy/compose.yaml, systemd-analyze for deploy/systemd, kubectl kustomize piped to
kubernetes-validate (strict schemas) for deploy/k8s with check-jsonschema for KEDA's resources, hadolint for
the Dockerfiles. Each is also shown a broken copy, so a validator that checks nothing would fail here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from radtrace.config import Settings
from radtrace.config_reference import settings_reference
from radtrace.supervisor import serve_components

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
UNIT_BINARY = "/opt/radtrace/venv/bin/radtrace"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on
KEDA_REDIS_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "listName",
                       "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
                       "usernameFromEnv", "passwordFromEnv"}  # fmt: skip


def _tool(name: str) -> str:
    """The validator's path: next to this Python (dev group) or on PATH (apt); its absence is a failure."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: .ci/run and the dev dependency group install it"
    return found


def _run(*argv: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False)


# --- docker compose ---------------------------------------------------------------------------------


def _compose_project(tmp_path: Path, env_text: str | None = None) -> Path:
    """deploy/compose.yaml beside a .env made from the example, as an operator lays it out."""
    project = tmp_path / "deploy"
    project.mkdir(parents=True)
    shutil.copy(DEPLOY / "compose.yaml", project / "compose.yaml")
    example = (DEPLOY / "radtrace.env.example").read_text()
    (project / ".env").write_text(example if env_text is None else env_text)
    return project


def _compose_config(project: Path) -> subprocess.CompletedProcess[str]:
    profiles = ["--profile", "demo", "--profile", "gpu1", "--profile", "vllm", "--profile", "atna"]
    return _run(_tool("docker-compose"), "--file", "compose.yaml", *profiles, "config", cwd=project)


def test_compose_file_is_valid_for_docker_compose_with_every_profile(tmp_path: Path) -> None:
    result = _compose_config(_compose_project(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either (an unset variable warns)
    config = yaml.safe_load(result.stdout)
    services = set(config["services"])
    assert {"listener", "worker-gpu0", "dispatcher", "api", "migrate", "redis", "postgres", "orthanc"} <= services
    gpu = config["services"]["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert gpu["device_ids"] == ["0"]
    assert "radtrace-data" in config["volumes"]
    assert "postgres-data" in config["volumes"]
    assert config["services"]["listener"]["ports"][0]["published"] in (104, "104")


def test_compose_refuses_a_misspelt_key_and_a_missing_database_password(tmp_path: Path) -> None:
    project = _compose_project(tmp_path)
    text = (project / "compose.yaml").read_text()
    (project / "compose.yaml").write_text(text.replace("stop_grace_period: 60s", "stop_grace_perod: 60s", 1))
    broken = _compose_config(project)
    assert broken.returncode != 0, broken.stderr
    assert "stop_grace_perod" in broken.stderr, broken.stderr

    without_password = _compose_project(tmp_path / "second", env_text="MODELS_DIR=/srv/radtrace/models\n")
    refused = _compose_config(without_password)
    assert refused.returncode != 0, refused.stderr
    assert "POSTGRES_PASSWORD" in refused.stderr, refused.stderr


HOLDER = ["/opt/radtrace/venv/bin/python", "/opt/radtrace/hold_on_exit_2.py", "radtrace"]


def test_compose_services_are_held_not_restarted_after_exit_2_and_started_again_after_a_reboot(tmp_path: Path) -> None:
    """compose.yaml had no ATNA forwarder, and its radtrace services (unless-stopped) were restarted after an exit 2
    (a newer radtrace raised the database's floor, a refused setting): Docker cannot exclude an exit status from a
    restart policy, and on-failure does not start a container again after a reboot. Each runs under
    hold_on_exit_2.py (tests/unit/test_deploy_hold_on_exit_2.py), which both images ship, with unless-stopped."""
    result = _compose_config(_compose_project(tmp_path))
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    radtrace_services = {name for name, service in services.items() if "radtrace" in service["image"]}
    assert radtrace_services == {"migrate", "listener", "worker-gpu0", "worker-gpu1", "dispatcher", "api",
                                 "atna-forwarder"}  # fmt: skip
    for name in sorted(radtrace_services - {"migrate"}):  # the migration is a one-off run: restart "no", not held
        assert services[name]["entrypoint"] == HOLDER, name
        assert services[name]["restart"] == "unless-stopped", name
        assert "/tmp" in services[name]["tmpfs"], name  # the hold file: gone at the container's next start
    forwarder = services["atna-forwarder"]
    assert forwarder["command"] == ["audit", "forward"]
    assert forwarder["profiles"] == ["atna"]  # started once RADTRACE_ATNA__* are set, by name or --profile atna
    assert "radtrace-data:/var/lib/radtrace:rw" in forwarder["volumes"]  # its cursor
    for image in ("cpu", "gpu"):
        dockerfile = (DEPLOY / "docker" / f"Dockerfile.{image}").read_text()
        assert "COPY deploy/docker/hold_on_exit_2.py /opt/radtrace/hold_on_exit_2.py" in dockerfile
        ignore = (DEPLOY / "docker" / f"Dockerfile.{image}.dockerignore").read_text()
        assert "!deploy/docker/hold_on_exit_2.py" in ignore.splitlines()


SITE = {
    "RADTRACE_STORE__URL": "postgresql+psycopg://radtrace:pw@db.hospital.example:5432/radtrace",
    "RADTRACE_BROKER__URL": "redis://:pw@redis.hospital.example:6379/0",
    "RADTRACE_NFS_SERVER": "nas.hospital.example",
    "RADTRACE_NFS_EXPORT": "/export/radtrace",
}


def _site_steps() -> list[list[str]]:
    """deploy/README.md's docker compose commands for a multi-host site, as argv."""
    lines = (DEPLOY / "README.md").read_text().splitlines()
    return [
        shlex.split(line.split("#", 1)[0]) for line in lines if "compose.site.yaml" in line and "docker compose" in line
    ]


def _site_project(tmp_path: Path, site: dict[str, str]) -> Path:
    example = (DEPLOY / "radtrace.env.example").read_text()
    project = _compose_project(tmp_path, env_text=example + "".join(f"{k}={v}\n" for k, v in site.items()))
    shutil.copy(DEPLOY / "compose.site.yaml", project / "compose.site.yaml")
    return project


def test_each_host_of_a_compose_site_runs_on_the_sites_database_broker_and_nfs_spool(tmp_path: Path) -> None:
    """Found following the README's 'a second host running only workers': compose.yaml fixes the URLs to its own
    unpublished PostgreSQL and Redis (a URL in .env changed nothing), and `up -d worker-gpu0` started them and the
    migration on the second host as the worker's dependencies: a site of its own, every start-up check passing."""
    steps = _site_steps()
    assert len(steps) == 4, steps  # the migration, the first host, the ATNA forwarder's host, a GPU host
    started: set[str] = set()
    for argv in steps:
        assert "--no-deps" in argv, argv  # not compose.yaml's own PostgreSQL, Redis and migration
        verb = "run" if "run" in argv else "up"
        started |= {word for word in argv[argv.index(verb) + 1 :] if not word.startswith("-")}
    assert started == {"migrate", "listener", "dispatcher", "api", "atna-forwarder", "worker-gpu0"}

    files = [word for argv in steps[:1] for i, word in enumerate(argv) if i and argv[i - 1] == "-f"]
    assert files == ["compose.yaml", "compose.site.yaml"]
    project = _site_project(tmp_path, SITE)
    args = [arg for file in files for arg in ("--file", file)]
    result = _run(_tool("docker-compose"), *args, "--profile", "gpu1", "config", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    config = yaml.safe_load(result.stdout)
    for name in sorted(started | {"worker-gpu1"}):
        environment = config["services"][name]["environment"]
        assert environment["RADTRACE_STORE__URL"] == SITE["RADTRACE_STORE__URL"], name
        assert environment["RADTRACE_BROKER__URL"] == SITE["RADTRACE_BROKER__URL"], name
        assert "radtrace-data:/var/lib/radtrace:rw" in config["services"][name]["volumes"], name
    assert config["volumes"]["radtrace-data"]["driver_opts"] == {
        "type": "nfs", "o": "addr=nas.hospital.example,rw,nfsvers=4.1", "device": ":/export/radtrace",
    }  # fmt: skip

    unset = _site_project(tmp_path / "unset", {k: v for k, v in SITE.items() if k != "RADTRACE_STORE__URL"})
    refused = _run(_tool("docker-compose"), *args, "config", cwd=unset)
    assert refused.returncode != 0, refused.stdout
    assert "set RADTRACE_STORE__URL in deploy/.env to the site's PostgreSQL" in refused.stderr, refused.stderr


# --- systemd ------------------------------------------------------------------------------------------


def _units_for_verify(tmp_path: Path, binary: str) -> list[str]:
    """The units copied with ExecStart's binary replaced by one that exists here (verify checks it)."""
    target = tmp_path / "units"
    target.mkdir()
    for unit in sorted(SYSTEMD.iterdir()):
        (target / unit.name).write_text(unit.read_text().replace(UNIT_BINARY, binary))
    names = [p.name.replace("@.service", "@0.service") for p in sorted(target.iterdir())]
    return [str(target / name) for name in names]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = _units_for_verify(tmp_path, str(Path(sys.executable).parent / "radtrace"))
    assert len(units) >= 7
    result = _run(_tool("systemd-analyze"), "verify", "--man=no", *units)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr  # warnings are defects


def test_systemd_analyze_verify_refuses_a_broken_unit(tmp_path: Path) -> None:
    units = _units_for_verify(tmp_path, "/nonexistent/radtrace")
    result = _run(_tool("systemd-analyze"), "verify", "--man=no", *units)
    assert result.returncode != 0, result.stderr
    assert "/nonexistent/radtrace" in result.stderr, result.stderr


# --- Kubernetes -----------------------------------------------------------------------------------------


def _kustomize(directory: Path = K8S) -> list[dict[str, Any]]:
    result = _run(_tool("kubectl"), "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _validate_kubernetes(docs: list[dict[str, Any]]) -> list[str]:
    """Strict schema errors of the built-in resources (kubernetes-validate); a kind it has no schema for fails."""
    import kubernetes_validate

    errors = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    return errors


def _validate_keda(docs: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    files = []
    for index, doc in enumerate(docs):
        files.append(tmp_path / f"keda-{index}.json")
        files[-1].write_text(json.dumps(doc))
    schema = K8S / "schemas" / "keda-v1alpha1.schema.json"
    return _run(_tool("check-jsonschema"), "--schemafile", str(schema), *map(str, files))


def _split_keda(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    keda = [doc for doc in docs if doc["apiVersion"].startswith("keda.sh/")]
    return [doc for doc in docs if doc not in keda], keda


def test_kubernetes_manifests_render_and_match_the_kubernetes_and_keda_schemas(tmp_path: Path) -> None:
    builtin, keda = _split_keda(_kustomize())
    secrets = list(yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()))
    kinds = {doc["kind"] for doc in builtin}
    assert {"Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim", "Job", "CronJob"} <= kinds
    assert _validate_kubernetes(builtin + secrets) == []
    assert {doc["kind"] for doc in keda} == {"ScaledObject", "TriggerAuthentication"}
    checked = _validate_keda(keda, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_kubernetes_validators_refuse_broken_resources(tmp_path: Path) -> None:
    builtin, keda = _split_keda(_kustomize())
    worker = next(doc for doc in builtin if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt "resources"
    assert any("resource" in error for error in _validate_kubernetes([worker]))
    keda[0]["spec"]["maxReplicas"] = 3  # KEDA calls it maxReplicaCount
    assert _validate_keda(keda[:1], tmp_path).returncode != 0


def _by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_kubernetes_workers_take_one_gpu_each_and_scale_on_the_gpu_queue_list() -> None:
    docs = _kustomize()
    deployments = _by_name(docs, "Deployment")
    config = _by_name(docs, "ConfigMap")["radtrace-config"]["data"]
    worker = deployments["radtrace-worker"]["spec"]["template"]["spec"]
    resources = worker["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1

    scaled = _by_name(docs, "ScaledObject")["radtrace-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "radtrace-worker"
    routine, stat = scaled["triggers"]
    prefix = config["RADTRACE_BROKER__KEY_PREFIX"]
    # kombu keeps the queue's waiting messages in the list <key_prefix><queue name> (see tests/integration).
    assert routine["metadata"]["listName"] == prefix + config["RADTRACE_BROKER__GPU_QUEUE"]
    assert stat["metadata"]["listName"] == prefix + config["RADTRACE_BROKER__STAT_QUEUE"]
    assert config["RADTRACE_BROKER__GPU_QUEUE"] == Settings().broker.gpu_queue
    assert config["RADTRACE_BROKER__STAT_QUEUE"] == Settings().broker.stat_queue
    for trigger in (routine, stat):
        assert trigger["type"] == "redis"
        assert set(trigger["metadata"]) <= KEDA_REDIS_METADATA
        assert trigger["authenticationRef"]["name"] in _by_name(docs, "TriggerAuthentication")

    listener = _by_name(docs, "Service")["radtrace-listener"]["spec"]
    assert {(port["port"], port["targetPort"]) for port in listener["ports"]} == {(104, "dicom"), (11112, "dicom")}
    for budget in _by_name(docs, "PodDisruptionBudget").values():
        labels = budget["spec"]["selector"]["matchLabels"]
        assert any(labels.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values())
    claim = _by_name(docs, "PersistentVolumeClaim")["radtrace-data"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]


def test_every_kubernetes_radtrace_process_mounts_the_shared_data_directory_at_its_data_dir() -> None:
    """The listener writes the spool, the workers the drafts; the dispatcher sends the drafts and the QA API and
    console serve them and the study pictures: each reads the one ReadWriteMany claim at RADTRACE_DATA_DIR (the
    start-up check 'shared data directory' refuses a worker, dispatcher or API without it). The API had no data
    volume: its data directory was the image's folder on a read-only root file system."""
    docs = _kustomize()
    data_dir = _by_name(docs, "ConfigMap")["radtrace-config"]["data"]["RADTRACE_DATA_DIR"]
    deployments = _by_name(docs, "Deployment")
    assert {"radtrace-listener", "radtrace-worker", "radtrace-dispatcher", "radtrace-api"} <= set(deployments)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                  if "persistentVolumeClaim" in v}  # fmt: skip
        (container,) = pod["containers"]
        mounted = {m["mountPath"]: claims.get(m["name"]) for m in container.get("volumeMounts", [])}
        assert mounted.get(data_dir) == "radtrace-data", f"{name} mounts {mounted}, not radtrace-data at {data_dir}"


def test_the_kubernetes_listener_is_one_pod_replaced_not_doubled_and_its_node_can_be_drained() -> None:
    """A listener refuses a data directory another listener holds (exit 2: listener.lock, flock, which NFS and CephFS
    make seen by every node of a ReadWriteMany volume; measured here: a second 'radtrace listen' on the same data
    directory, another port, exit 2 naming the first). The Deployment had 2 replicas and a rolling update (a new
    pod beside the old): the second crash-looped and a rollout never finished."""
    docs = _kustomize()
    listener = _by_name(docs, "Deployment")["radtrace-listener"]["spec"]
    assert listener["replicas"] == 1
    assert listener["strategy"] == {"type": "Recreate"}
    budget = _by_name(docs, "PodDisruptionBudget")["radtrace-listener"]["spec"]
    assert "minAvailable" not in budget  # minAvailable 1 of 1 pod: no drain of its node ever goes through
    assert budget["maxUnavailable"] == 1


def test_the_kubernetes_atna_forwarder_is_one_pod_at_most_whose_exit_reason_is_its_termination_message() -> None:
    """A Deployment restarts its pod whatever the exit (restartPolicy Always only): an exit 2 is CrashLoopBackOff, and
    the line that says why is kept as the pod's termination message (kubectl describe pod: Last State, Message)."""
    docs = _kustomize()
    spec = _by_name(docs, "Deployment")["radtrace-atna-forwarder"]["spec"]
    assert spec["replicas"] == 0  # 1 in the site's overlay once RADTRACE_ATNA__HOST is set; never 2 (one cursor)
    assert spec["strategy"] == {"type": "Recreate"}  # the old pod gone before the new one: never two forwarding
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"] == ["audit", "forward"]
    assert spec["template"]["spec"].get("restartPolicy", "Always") == "Always"
    for name, deployment in _by_name(docs, "Deployment").items():  # every radtrace process: the reason it exited
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container.get("terminationMessagePolicy") == "FallbackToLogsOnError", name
    assert "radtrace-atna-forwarder" not in _by_name(docs, "PodDisruptionBudget")  # 0 or 1 pod: nothing to keep up


def test_every_secret_the_kubernetes_manifests_name_is_in_the_secrets_example() -> None:
    referenced: set[str] = set()
    for doc in _kustomize():
        _collect_secret_refs(doc, referenced)
    examples = {doc["metadata"]["name"] for doc in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())}
    assert referenced, "no Secret referenced at all"
    assert referenced <= examples, referenced - examples


def _collect_secret_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "secretRef" and isinstance(value, dict):
                found.add(value["name"])
            elif key == "secret" and isinstance(value, dict):
                found.add(value["secretName"])
            elif key == "secretTargetRef":
                found.update(item["name"] for item in value)
            else:
                _collect_secret_refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _collect_secret_refs(item, found)


# --- Dockerfiles ----------------------------------------------------------------------------------------

DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*[!e]"))  # not the .dockerignore files


def test_dockerfiles_pass_hadolint() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]
    config = DEPLOY / "docker" / "hadolint.yaml"
    result = _run(_tool("hadolint"), "--config", str(config), *map(str, DOCKERFILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_a_root_image_with_unpinned_packages(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = _run(_tool("hadolint"), "--config", str(DEPLOY / "docker" / "hadolint.yaml"), str(bad))
    assert result.returncode != 0, result.stdout
    assert "DL3002" in result.stdout, result.stdout  # last USER should not be root


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_non_root_with_a_health_check_and_no_weights_or_secrets(dockerfile: Path) -> None:
    lines = [line.strip() for line in dockerfile.read_text().splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    assert sum(line.startswith("FROM ") for line in instructions) >= 2
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in instructions)
    copied = " ".join(line for line in instructions if line.startswith(("COPY ", "ADD ")))
    assert "/models" not in copied
    assert ".safetensors" not in copied
    assert "ADD " not in copied
    env_names = re.findall(r"\b([A-Z_]+)=", " ".join(line for line in instructions if not line.startswith("RUN ")))
    assert not [name for name in env_names if re.search("PASSWORD|TOKEN|SECRET|_KEY$", name)]


# --- the same commands everywhere ---------------------------------------------------------------------------


def _without_placement(argv: list[str]) -> tuple[str, ...]:
    """A command without ``--gpu N`` and ``--metrics-offset N``: each deployment places its workers itself."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--gpu", "--metrics-offset"):
            skip = True
        elif not arg.startswith("--metrics-offset="):
            out.append(arg)
    return tuple(out)


def unit_commands() -> dict[str, list[str]]:
    """Each systemd unit's ExecStart, split, without the installed binary (the integration test runs these)."""
    commands = {}
    for unit in sorted(SYSTEMD.glob("*.service")):
        (line,) = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
        argv = shlex.split(line.removeprefix("ExecStart="))
        assert argv[0] == UNIT_BINARY, unit.name
        commands[unit.name] = argv[1:]
    return commands


def test_systemd_compose_and_kubernetes_run_the_children_of_radtrace_serve() -> None:
    serve = {_without_placement(list(component.command)) for component in serve_components()}
    units = {name: _without_placement(argv) for name, argv in unit_commands().items()}
    assert unit_commands()["radtrace-worker@.service"][-3:] == ["--gpu", "%i", "--metrics-offset=1%i"]
    assert unit_commands()["radtrace-dispatcher.service"] == list(serve_components()[2].command)
    long_running = {command for name, command in units.items() if name not in {
        "radtrace-db-upgrade.service", "radtrace-audit-checkpoint.service",
        "radtrace-audit-forward.service"}}  # fmt: skip
    assert long_running == serve
    assert units["radtrace-db-upgrade.service"] == ("db", "upgrade")
    assert units["radtrace-audit-forward.service"] == ("audit", "forward")  # serve's child 'atna' (atna.enabled)

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    compose_commands = {_without_placement(s["command"]) for s in compose.values() if s.get("image", "").startswith(
        "${RADTRACE_")}  # fmt: skip
    assert compose_commands == serve | {("db", "upgrade"), ("audit", "forward")}

    k8s = {_without_placement(doc["spec"]["template"]["spec"]["containers"][0]["args"])
           for doc in _kustomize() if doc["kind"] == "Deployment"}  # fmt: skip
    assert k8s == serve | {("audit", "forward")}


def test_env_example_names_every_setting() -> None:
    example = (DEPLOY / "radtrace.env.example").read_text()
    present = set(re.findall(r"^#? ?(RADTRACE_[A-Z0-9_]+)=", example, flags=re.MULTILINE))
    settings = set(re.findall(r"`(RADTRACE_[A-Z0-9_]+)`", settings_reference()))
    assert len(settings) > 50
    assert settings - present == set()
    assert present - settings == set()
