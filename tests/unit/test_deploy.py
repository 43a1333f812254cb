"""Structural checks of the rendered Kubernetes manifests and the Dockerfile.

Renders deploy/overlays/* with the kustomize that `make deploy-check` builds into
.cache/bin. Without it the tests skip (run `make deploy-check` once); under CI=true,
where .ci/run builds it first, a missing kustomize is a failure.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.settings import WorkerSettings, load_settings
from stream_app.topics import TopicAdminSettings
from stream_app.trainer_settings import TrainerSettings
from tests.ci import in_ci

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / ".cache" / "bin" / "kustomize"
OVERLAYS = ("dev", "prod", "prod-operators")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
UID = 10001

# Settings the manifests set before stream_app has them: harmless until then (the
# settings ignore unknown variables). Remove a name once WorkerSettings reads it.
PENDING_SETTINGS = {
    "RNNREC_MODEL_VERIFY_KEY_FILE": "workers verify model signatures (DESIGN.md, Security)",
    "RNNREC_MODEL_SIGNING_KEY_FILE": "the trainer signs model manifests",
}


@cache
def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay as kustomize renders it (parsed documents)."""
    if not KUSTOMIZE.exists():
        reason = f"{KUSTOMIZE.relative_to(ROOT)} missing: run `make deploy-check` once"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(ROOT / "deploy" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def component(doc: dict[str, Any]) -> str:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def the_workload(docs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, *WORKLOADS) if component(d) == role]
    assert len(found) == 1, f"expected one {role} workload, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def settings_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("rnnrec-settings")
    ]
    return config["data"]


def probe_path(container: dict[str, Any], probe: str) -> str:
    return container[probe]["httpGet"]["path"]


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


# --- Scale -------------------------------------------------------------------------


def test_worker_replicas_never_exceed_the_clickstream_partitions(rendered) -> None:
    overlay, docs = rendered
    partitions = int(settings_of(docs)["RNNREC_PARTITIONS"])
    worker = the_workload(docs, "worker")
    scalers = [
        d
        for d in of_kind(docs, "ScaledObject")
        if d["spec"]["scaleTargetRef"]["name"] == "rnnrec-worker"
    ]
    if scalers:
        # The autoscaler owns the count: no replicas in the manifest to fight it.
        assert "replicas" not in worker["spec"], overlay
        for scaler in scalers:
            assert scaler["spec"]["scaleTargetRef"]["kind"] == worker["kind"]
            assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]
            assert scaler["spec"]["maxReplicaCount"] <= partitions, overlay
            for trigger in scaler["spec"]["triggers"]:
                assert trigger["metadata"].get("allowIdleConsumers", "false") == "false"
                # As the workers' consumer: no committed offset means "from the start".
                assert trigger["metadata"]["offsetResetPolicy"] == "earliest"
            # Lag on either input topic is work for the workers.
            topics = [t["metadata"]["topic"] for t in scaler["spec"]["triggers"]]
            assert sorted(topics) == ["clickstream", "clickstream-repartition"], overlay
    else:
        assert 1 <= worker["spec"]["replicas"] <= partitions, overlay
    assert not of_kind(docs, "HorizontalPodAutoscaler")


def test_trainer_is_exactly_one_replica_replaced_not_rolled(rendered) -> None:
    _, docs = rendered
    trainer = the_workload(docs, "trainer")
    assert trainer["kind"] == "Deployment"
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    for scaler in of_kind(docs, "ScaledObject"):
        assert scaler["spec"]["scaleTargetRef"]["name"] != trainer["metadata"]["name"]


def test_dev_runs_a_memory_store_deployment_and_prod_a_rocksdb_statefulset() -> None:
    dev, prod = render("dev"), render("prod")
    assert the_workload(dev, "worker")["kind"] == "Deployment"
    assert settings_of(dev)["RNNREC_STORE"] == "memory://"
    worker = the_workload(prod, "worker")
    assert worker["kind"] == "StatefulSet"
    assert settings_of(prod)["RNNREC_STORE"] == "rocksdb://"
    (claim,) = worker["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(worker)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert settings_of(prod)["RNNREC_DATA_DIR"].startswith("/data/")


@pytest.mark.parametrize("role", ["worker", "trainer"])
def test_starting_model_on_a_volume_it_cannot_modify(rendered, role: str) -> None:
    # The trainer too: on a fresh cluster (empty model-updates) it has no other model.
    _, docs = rendered
    (container,) = pod_spec(the_workload(docs, role))["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    source = env["RNNREC_MODEL_SOURCE"]
    mount = next(m for m in container["volumeMounts"] if source.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True


def test_workers_leave_one_at_a_time(rendered) -> None:
    _, docs = rendered
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    worker = the_workload(docs, "worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


# --- Probes and lifecycle ----------------------------------------------------------


@pytest.mark.parametrize("role", ["worker", "trainer"])
def test_probes_on_the_right_paths_and_port(rendered, role: str) -> None:
    _, docs = rendered
    workload = the_workload(docs, role)
    (container,) = pod_spec(workload)["containers"]
    assert probe_path(container, "livenessProbe") == "/health"
    assert probe_path(container, "readinessProbe") == "/ready"
    assert probe_path(container, "startupProbe") == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(settings_of(docs)["RNNREC_WEB_PORT"])
    if role == "trainer":  # the trainer serves its views on its own setting
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert int(env["RNNREC_TRAINER_METRICS_PORT"]) == ports["http"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    startup = container["startupProbe"]
    # Room for model load, compilation and state recovery before liveness may kill.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert pod_spec(workload)["terminationGracePeriodSeconds"] >= 60


def test_metrics_services_reach_the_web_port(rendered) -> None:
    _, docs = rendered
    services = {d["metadata"]["name"]: d for d in of_kind(docs, "Service")}
    for role in ("worker", "trainer"):
        service = services[f"rnnrec-{role}-metrics"]
        assert (
            service["spec"]["selector"]
            == the_workload(docs, role)["spec"]["selector"]["matchLabels"]
        )
        assert service["spec"]["ports"][0]["targetPort"] == "http"


# --- Hardening ---------------------------------------------------------------------


def test_every_pod_is_hardened(rendered) -> None:
    overlay, docs = rendered
    for workload in of_kind(docs, *WORKLOADS):
        where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] not in ("", "default"), where
        assert spec["enableServiceLinks"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            assert "hostPath" not in volume, where
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert not ctx["capabilities"].get("add"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: /tmp must be a writable volume"
            for path, name in mounts.items():
                assert name in volumes or name in claims, f"{where}: {path}"


def test_every_pod_is_under_a_default_deny_network_policy(rendered) -> None:
    _, docs = rendered
    deny = [
        d
        for d in of_kind(docs, "NetworkPolicy")
        if set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
    ]
    assert deny, "no default-deny NetworkPolicy"
    selector = deny[0]["spec"]["podSelector"]["matchLabels"]
    for workload in of_kind(docs, *WORKLOADS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_namespace_enforces_the_restricted_pod_security_standard(rendered) -> None:
    _, docs = rendered
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- Secrets -----------------------------------------------------------------------

SECRET_PATTERNS = [
    re.compile(r"^\s*kind:\s*Secret\s*$", re.M),
    re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    re.compile(r"^\s*(password|sasl\.jaas\.config|token|api[_-]?key)\s*:\s*\S", re.M | re.I),
]


def test_no_secret_data_in_the_repository() -> None:
    files = [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    files += [ROOT / "Dockerfile", ROOT / ".dockerignore"]
    for path in files:
        text = path.read_text(errors="replace")
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path.relative_to(ROOT)}: {pattern.pattern}"


def test_credentials_only_by_reference(rendered) -> None:
    overlay, docs = rendered
    assert not of_kind(docs, "Secret"), f"{overlay} renders a Secret"
    for config in of_kind(docs, "ConfigMap"):
        for key in config.get("data", {}):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|PRIVATE", key, re.I), key
    for workload in of_kind(docs, *WORKLOADS):
        spec = pod_spec(workload)
        secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
        for container in spec["containers"]:
            secret_dirs = [
                m["mountPath"]
                for m in container.get("volumeMounts", [])
                if m["name"] in secret_volumes
            ]
            for env in container.get("env", []):
                if not re.search(r"PASSWORD|SECRET|TOKEN", env["name"]):
                    continue
                if env["name"].endswith("_FILE"):
                    # A path, not a secret: it must point into a mounted Secret.
                    path = env["value"]
                    assert any(path.startswith(d.rstrip("/") + "/") for d in secret_dirs), path
                else:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]


# --- Settings ----------------------------------------------------------------------


def known_setting_names() -> set[str]:
    names: set[str] = set()
    for cls in (WorkerSettings, TopicAdminSettings, TrainerSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            choices = getattr(alias, "choices", None)
            if choices:
                names.update(str(c).upper() for c in choices if isinstance(c, str))
            names.add(f"{prefix}{name}".upper())
    return names


FILE_SETTINGS = {
    "RNNREC_KAFKA_SSL_CAFILE",
    "RNNREC_KAFKA_SSL_CERTFILE",
    "RNNREC_KAFKA_SSL_KEYFILE",
    "RNNREC_KAFKA_SASL_PASSWORD_FILE",
}
"""Settings naming files that must exist when the settings are read."""


def stand_in_file(tmp_path: Path, pod_path: str) -> Path:
    """A non-empty local file standing in for one mounted at ``pod_path`` in the pod."""
    local = tmp_path / pod_path.lstrip("/")
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("stand-in\n")
    return local


def test_every_rnnrec_variable_is_a_setting_and_the_values_validate(
    rendered, monkeypatch, tmp_path: Path
) -> None:
    overlay, docs = rendered
    known = known_setting_names()
    settings = settings_of(docs)
    for workload in of_kind(docs, *WORKLOADS):
        env = dict(settings)
        for container in pod_spec(workload)["containers"]:
            for item in container.get("env", []):
                env[item["name"]] = item.get("value", "from-a-reference")
        for name in env:
            if name.startswith("RNNREC_"):
                assert name in known or name in PENDING_SETTINGS, f"{overlay}: unknown {name}"
        for name in list(os.environ):
            if name.startswith("RNNREC_") or name == "KAFKA_BOOTSTRAP_SERVERS":
                monkeypatch.delenv(name)
        for name, value in env.items():
            if name in FILE_SETTINGS:
                # The settings check that these files exist; the pod mounts them.
                value = str(stand_in_file(tmp_path, value))
            monkeypatch.setenv(name, value)
        load_settings()  # raises SettingsError naming the variable
        TopicAdminSettings()


def test_the_topics_job_runs_the_topic_tool(rendered) -> None:
    _, docs = rendered
    job = the_workload(docs, "topics")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["python", "-m", "stream_app.topics"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1


# --- Kafka ACLs --------------------------------------------------------------------


def acls_from_strimzi() -> set[tuple[str, str, str, str, str]]:
    path = ROOT / "deploy" / "components" / "strimzi-users" / "kafkausers.yaml"
    out = set()
    for user in yaml.safe_load_all(path.read_text()):
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            pattern = {"prefix": "prefixed"}.get(resource["patternType"], resource["patternType"])
            for op in acl["operations"]:
                out.add((user["metadata"]["name"], resource["type"], pattern, resource["name"], op))
    return out


def acls_from_script() -> set[tuple[str, str, str, str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "RNNREC_TOPIC_PREFIX"}
    script = subprocess.run(
        ["bash", str(ROOT / "deploy" / "kafka-acls.sh")],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    )  # fmt: skip
    out = set()
    for line in script.stdout.splitlines():
        args = shlex.split(line)
        principal = args[args.index("--allow-principal") + 1].removeprefix("User:")
        kind = next(a[2:] for a in args if a in ("--topic", "--group"))
        name = args[args.index(f"--{kind}") + 1]
        pattern = args[args.index("--resource-pattern-type") + 1]
        for i, arg in enumerate(args):
            if arg == "--operation":
                out.add((principal, kind, pattern, name, args[i + 1]))
    return out


def test_acl_script_and_strimzi_users_grant_the_same() -> None:
    strimzi = acls_from_strimzi()
    assert acls_from_script() == strimzi
    # Least privilege in the large: only the trainer writes models, only the worker
    # writes recommendations, and nobody gets All or cluster-wide rights.
    writers = {p for p, kind, _, name, op in strimzi if kind == "topic" and op == "Write"}
    assert {p for p, k, _, n, op in strimzi if n == "model-updates" and op == "Write"} == {
        "rnnrec-trainer"
    }
    assert {p for p, k, _, n, op in strimzi if n == "recommendations" and op == "Write"} == {
        "rnnrec-worker"
    }
    assert writers == {"rnnrec-worker", "rnnrec-trainer", "rnnrec-tools"}
    assert not {a for a in strimzi if a[4] == "All" or a[1] == "cluster"}
    # The tools write only what `rnnrec user delete/replay` and `item` write, read
    # without a consumer group and create nothing; the trainer creates nothing.
    tools = {a for a in strimzi if a[0] == "rnnrec-tools"}
    assert {n for _, _, _, n, op in tools if op == "Write"} == {"clickstream", "item-updates"}
    assert {a[1] for a in tools} == {"topic"}
    assert not {
        a for a in strimzi if a[0] in ("rnnrec-tools", "rnnrec-trainer") and a[4] == "Create"
    }


def test_keda_may_describe_every_topic_it_reads_lag_on() -> None:
    docs = render("prod-operators")
    strimzi = acls_from_strimzi()
    for scaler in of_kind(docs, "ScaledObject"):
        for trigger in scaler["spec"]["triggers"]:
            topic = trigger["metadata"]["topic"]
            assert ("rnnrec-keda", "topic", "literal", topic, "Describe") in strimzi, topic


def test_trainer_group_is_the_one_its_acls_name(rendered) -> None:
    _, docs = rendered
    (container,) = pod_spec(the_workload(docs, "trainer"))["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    group = env.get("RNNREC_TRAINER_GROUP_ID", "rnnrec-trainer")
    groups = {
        (n, op)
        for p, kind, _, n, op in acls_from_strimzi()
        if p == "rnnrec-trainer" and kind == "group"
    }
    assert groups == {(group, "Read"), (group, "Describe")}


# --- Dockerfile --------------------------------------------------------------------


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def test_dockerfile_runs_rnnrec_as_the_manifests_uid() -> None:
    instructions = list(dockerfile_instructions())
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+ AS [\w-]+", froms[0]), froms[0]
    assert len(froms) >= 3, "multi-stage: a base, a builder and the runtime"
    last = {word: rest for word, rest in instructions}
    assert last["ENTRYPOINT"] == '["rnnrec"]'
    assert last["CMD"] == '["worker"]'
    # The health check probes the trainer's own port in a trainer container.
    trainer_port = TrainerSettings.model_fields["trainer_metrics_port"].default
    assert f"'RNNREC_TRAINER_METRICS_PORT', '{trainer_port}'" in last["HEALTHCHECK"]
    assert last["USER"].split(":")[0] in (str(UID), "${RNNREC_UID}")
    assert f"ARG RNNREC_UID={UID}" in {f"{w} {r}" for w, r in instructions}
