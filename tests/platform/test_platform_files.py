"""The deployment files in platform/ checked against the code they deploy, so neither
drifts from the other silently: the processes the Procfile runs, the Celery queues the
settings route tasks to, the environment variables the settings read, one beat, and the
Collector example's paths and ports."""

import ast
import base64
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"
# The local Messages API server: for development and tests, never deployed.
DEV_ONLY = {"llm"}
DEFAULT_QUEUE = "celery"  # Celery's own default; the settings do not rename it
# Read by boto3 rather than the settings.
LIBRARY_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
# What a deployment with its own services cannot run without.
REQUIRED = {
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "BLOB_STORE_URL",
    "EXECUTION_VAULT_KEYS",
}


def settings_variables() -> dict[str, object]:
    """Every variable controlplane/settings.py reads through envconf, with its default
    (None where there is none or it is not a literal)."""
    tree = ast.parse((ROOT / "controlplane" / "settings.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("env_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            default = node.args[1] if len(node.args) > 1 else None
            found[node.args[0].value] = default.value if isinstance(default, ast.Constant) else None
    return found


def code_queues(env: dict[str, str]) -> set[str]:
    """The queues tasks are routed to under `env`: every *_QUEUE setting (unset or empty
    is Celery's default queue)."""
    queues = set()
    for name, default in settings_variables().items():
        if name.endswith("_QUEUE"):
            queues.add(env.get(name) or default or DEFAULT_QUEUE)
    if int(env.get("EXECUTION_TOOL_THREADS", 0)):  # slow tools run on the worker's threads
        queues.discard(
            env.get("EXECUTION_TOOL_QUEUE") or settings_variables()["EXECUTION_TOOL_QUEUE"]
        )
    return queues


def process(command) -> tuple:
    """What a command runs, as (kind, queues, env): web, otlp_grpc, worker, beat, migrate,
    with a worker's queues and the variables set on the command line."""
    if isinstance(command, str):  # "sleep 5; exec nice -n 5 celery ...": the last one
        command = shlex.split(command.rsplit(";", 1)[-1])
    argv, env = list(command), {}
    while argv and (argv[0] in ("exec", "nice", "-n") or argv[0].isdigit() or "=" in argv[0]):
        if "=" in argv[0]:
            name, value = argv[0].split("=", 1)
            env[name] = value
        argv = argv[1:]
    if argv[0] == "gunicorn":
        return ("web", frozenset(), env)
    if argv[0] == "celery" and "worker" in argv:
        queues = argv[argv.index("-Q") + 1].split(",") if "-Q" in argv else [DEFAULT_QUEUE]
        return ("worker", frozenset(queues), env)
    if argv[0] == "celery" and "beat" in argv:
        return ("beat", frozenset(), env)
    if "manage.py" in argv:
        return (argv[argv.index("manage.py") + 1], frozenset(), env)
    if argv[:3] == ["python", "-m", "execution.devllm.server"]:
        return ("llm", frozenset(), env)
    raise AssertionError(f"a command the platform test does not know: {command!r}")


def kinds(commands) -> set[tuple]:
    return {process(command)[:2] for command in commands}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): command.strip() for name, command in entries}


def documented() -> dict[str, str]:
    """processes.md's table: process -> command."""
    rows = re.findall(
        r"^\| ([\w-]+) \| `([^`]+)` \|", (PLATFORM / "processes.md").read_text(), re.M
    )
    return dict(rows)


def compose() -> dict:
    return yaml.safe_load((PLATFORM / "compose.yaml").read_text())


def compose_apps() -> dict[str, dict]:
    """The services that run Flightdeck's own code (those with its environment)."""
    services = compose()["services"]
    return {k: v for k, v in services.items() if "DATABASE_URL" in v.get("environment", {})}


def k8s() -> list[dict]:
    return list(yaml.safe_load_all((PLATFORM / "k8s" / "flightdeck.yaml").read_text()))


def k8s_kind(kind: str) -> list[dict]:
    return [doc for doc in k8s() if doc["kind"] == kind]


def k8s_containers() -> list[tuple[dict, dict]]:
    """(deployment, container) for every container and init container."""
    out = []
    for deployment in k8s_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        out += [(deployment, c) for c in pod.get("initContainers", []) + pod["containers"]]
    return out


def k8s_config() -> dict[str, str]:
    (config,) = [
        doc for doc in k8s_kind("ConfigMap") if doc["metadata"]["name"] == "flightdeck-config"
    ]
    return config["data"]


def k8s_variables(container: dict) -> set[str]:
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "flightdeck-config"
        names |= set(k8s_config())
    return names


def test_it_deploys_the_processes_it_documents():
    expected = kinds(documented().values())
    assert {kind for kind, _ in expected} == {"web", "otlp_grpc", "worker", "beat", "migrate"}
    assert kinds(s["command"] for s in compose_apps().values()) == expected
    assert kinds(c["command"] for _, c in k8s_containers()) == expected


def test_it_runs_the_embedded_default_with_every_part_in_fewer_processes():
    """The Procfile (`make run`): the web process serves OTLP/gRPC too, and the worker
    runs beat on a thread."""
    commands = procfile()
    found = {name: process(command) for name, command in commands.items()}
    assert {kind for kind, _, _ in found.values()} - DEV_ONLY == {"web", "worker"}
    assert "gunicorn_embedded" in commands["web"]
    assert "otlp_grpc" in (ROOT / "controlplane" / "gunicorn_embedded.py").read_text()


def test_it_consumes_every_queue_the_code_routes_to_and_no_other():
    routed = code_queues({})
    assert {DEFAULT_QUEUE, "execution-tools"} <= routed
    compose_env = compose()["x-app"]["environment"]
    for name, commands, env in (
        ("processes.md", documented().values(), {}),
        ("compose.yaml", [s["command"] for s in compose_apps().values()], compose_env),
        ("k8s", [c["command"] for _, c in k8s_containers()], k8s_config()),
        *((f"Procfile {n}", [c], process(c)[2]) for n, c in procfile().items()),
    ):
        consumed = set()
        for kind, queues, _ in map(process, commands):
            consumed |= queues if kind == "worker" else set()
        if name.startswith("Procfile") and not consumed:
            continue  # not a worker
        assert consumed == code_queues(env), name


def test_it_scales_each_worker_on_the_queue_it_consumes():
    commands = {d["metadata"]["name"]: process(c["command"]) for d, c in k8s_containers()}
    scaled = k8s_kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        name for name, (kind, _, _) in commands.items() if kind == "worker"
    }
    for scaler in scaled:
        _, queues, _ = commands[scaler["spec"]["scaleTargetRef"]["name"]]
        assert {t["metadata"]["listName"] for t in scaler["spec"]["triggers"]} == set(queues)


def test_it_sets_only_variables_the_code_reads_and_all_it_needs():
    known = set(settings_variables()) | LIBRARY_VARIABLES
    app_env = compose()["x-app"]["environment"]
    assert set(app_env) <= known, set(app_env) - known
    assert set(app_env) >= REQUIRED, REQUIRED - set(app_env)
    for service in compose_apps().values():
        assert service["environment"] == app_env  # every process sees the same settings
    first = None
    for deployment, container in k8s_containers():
        names = k8s_variables(container)
        assert names <= known, (deployment["metadata"]["name"], names - known)
        assert names >= REQUIRED, (deployment["metadata"]["name"], REQUIRED - names)
        assert first is None or names == first
        first = names
        for entry in container.get("env", []):  # secrets by reference, never by value
            assert "value" not in entry, entry["name"]
    # Procfile placeholders are the settings' variables, or the Makefile's own.
    placeholders = set(re.findall(r"\$\{(\w+)\}", (ROOT / "Procfile").read_text()))
    makefile = (ROOT / "Makefile").read_text()
    for name in placeholders - known:
        assert name in makefile, name


def test_it_runs_one_beat():
    beats = [d for d, c in k8s_containers() if process(c["command"])[0] == "beat"]
    assert [d["spec"]["replicas"] for d in beats] == [1]
    assert beats[0]["spec"]["strategy"]["type"] == "Recreate"  # never two during a rollout
    in_compose = [s for s in compose_apps().values() if process(s["command"])[0] == "beat"]
    assert len(in_compose) == 1 and in_compose[0].get("deploy", {}).get("replicas", 1) == 1
    embedded = [c for c in procfile().values() if "--beat-thread" in c or " beat" in c]
    assert len(embedded) == 1


def test_it_probes_health_and_exposes_the_ports_the_processes_listen_on():
    grpc_port = int(k8s_config()["OTLP_GRPC_ADDRESS"].rsplit(":", 1)[1])
    assert (
        compose()["x-app"]["environment"]["OTLP_GRPC_ADDRESS"] == k8s_config()["OTLP_GRPC_ADDRESS"]
    )
    ports = {}
    for _, container in k8s_containers():
        kind = process(container["command"])[0]
        probe = container.get("readinessProbe")
        if kind == "web":
            assert resolve(probe["httpGet"]["path"]).url_name == "health"
            bind = container["command"][container["command"].index("--bind") + 1]
            ports["web"] = int(bind.rsplit(":", 1)[1])
        if kind == "otlp_grpc":
            assert probe["tcpSocket"]["port"] == grpc_port
            ports["otlp_grpc"] = grpc_port
        if kind in ("web", "otlp_grpc"):
            assert [p["containerPort"] for p in container["ports"]] == [ports[kind]]
    services = {s["metadata"]["name"]: s for s in k8s_kind("Service")}
    assert services["flightdeck-web"]["spec"]["ports"][0]["targetPort"] == ports["web"]
    assert services["flightdeck-otlp-grpc"]["spec"]["ports"][0]["targetPort"] == grpc_port
    budgets = {b["spec"]["selector"]["matchLabels"]["app"] for b in k8s_kind("PodDisruptionBudget")}
    assert {"flightdeck-web", "flightdeck-otlp-grpc"} <= budgets


def test_the_collector_example_reaches_flightdeck():
    collector = yaml.safe_load((PLATFORM / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        assert set(pipeline[section]) <= set(collector[section]), section
    # Sample by tail first, then batch what is kept.
    assert pipeline["processors"] == ["tail_sampling", "batch"]
    assert collector["processors"]["tail_sampling"]["policies"]
    grpc_port = int(k8s_config()["OTLP_GRPC_ADDRESS"].rsplit(":", 1)[1])
    for name, exporter in collector["exporters"].items():
        assert re.fullmatch(r"Bearer \$\{env:\w+\}", exporter["headers"]["Authorization"])
        if name.startswith("otlphttp"):
            # The exporter appends the signal's path to its endpoint.
            path = urlsplit(exporter["endpoint"]).path.rstrip("/") + "/v1/traces"
            assert resolve(path).func is not None
        else:
            assert exporter["endpoint"] == f"flightdeck-otlp-grpc:{grpc_port}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("celery -A controlplane worker -Q a,b", ("worker", {"a", "b"}, {})),
        ("sleep 5; exec nice -n 5 celery -A x worker", ("worker", {DEFAULT_QUEUE}, {})),
        ("X=2 exec celery -A x worker --beat-thread", ("worker", {DEFAULT_QUEUE}, {"X": "2"})),
    ],
)
def test_it_reads_the_commands_it_compares(command, expected):
    kind, queues, env = process(command)
    assert (kind, set(queues), env) == expected


def test_it_passes_the_deploy_check_with_the_production_settings(tmp_path):
    """`manage.py check --deploy` with the settings k8s/ deploys (its ConfigMap) and this
    machine's services standing in for the Secret: no security warning, no error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(k8s_config())
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        EXECUTION_VAULT_KEYS=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        FLIGHTDECK_VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.findall(r"\(security\.[WE]\d+\).*", output), output
