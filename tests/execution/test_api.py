"""The agents and runs API, through a real HTTP client against the live server."""

import tracemalloc

import pytest

from controlplane.tenancy import tenant_scope
from execution.models import Run
from tests.execution.bundles import (
    agent_with_bundle,
    make_bundle,
    tar_gz_with_folders,
    tar_gz_with_long_name,
    tar_gz_with_pax_header,
    tar_with_symlink,
    zip_bomb,
    zip_with_entries,
)

AGENT = "def main(ctx, input):\n    return {'echo': input}\n"
MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-5"\n'


def upload(api, key, agent_id, data, name="bundle.tar.gz"):
    return api.post(f"/api/v1/agents/{agent_id}/versions", key=key, files={"bundle": (name, data)})


@pytest.fixture
def key(acme, make_key):
    return make_key(acme, "read", "write")


@pytest.fixture
def agent_id(api, key):
    response = api.post("/api/v1/agents", key=key, json={"name": "echo"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_it_creates_agents_and_versions(api, key, agent_id):
    for fmt, name in (("tar.gz", "b.tar.gz"), ("zip", "b.zip")):
        data = make_bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT}, fmt=fmt)
        response = upload(api, key, agent_id, data, name)
        assert response.status_code == 201, response.text
        assert response.json()["bundle_format"] == fmt
        assert response.json()["manifest"]["entrypoint"] == "agent:main"
    versions = api.get(f"/api/v1/agents/{agent_id}/versions", key=key).json()
    assert [v["version"] for v in versions] == [2, 1]
    agents = api.get("/api/v1/agents", key=key).json()
    assert agents == [
        {**agents[0], "id": agent_id, "name": "echo", "latest_version": 2},
    ]


def test_it_stores_bundles_content_addressed(api, key, agent_id, acme):
    from controlplane.blobstore import get_blob_store

    data = make_bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT})
    first = upload(api, key, agent_id, data).json()
    second = upload(api, key, agent_id, data).json()
    assert first["bundle_sha256"] == second["bundle_sha256"]
    keys = list(get_blob_store().list(f"t/{acme.id}/bundles/"))
    assert keys == [
        f"t/{acme.id}/bundles/{first['bundle_sha256'][:2]}/{first['bundle_sha256']}.tar.gz"
    ]


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"agent.py": AGENT}, "no flightdeck.toml"),
        ({"flightdeck.toml": 'entrypoint = "agent"\n', "agent.py": AGENT}, "module:function"),
        (
            {"flightdeck.toml": 'entrypoint = "other:main"\n', "agent.py": AGENT},
            "not in the bundle",
        ),
        (
            {"flightdeck.toml": 'entrypoint = "agent:run"\n', "agent.py": AGENT},
            "'run' is not defined",
        ),
        ({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "../evil.py": "x"}, "path traversal"),
        ({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "/etc/evil": "x"}, "path traversal"),
        ({"flightdeck.toml": MANIFEST + 'tools = ["nope"]\n', "agent.py": AGENT}, "unknown tools"),
        (
            {"flightdeck.toml": MANIFEST + "[limits]\nmemory_mb = 999999\n", "agent.py": AGENT},
            "above the platform maximum",
        ),
        ({"flightdeck.toml": "entrypoint = [", "agent.py": AGENT}, "not valid TOML"),
        (
            {"flightdeck.toml": MANIFEST + 'input_schema = "object"\n', "agent.py": AGENT},
            "[input_schema] must be a table",
        ),
        (
            {"flightdeck.toml": MANIFEST + '[input_schema]\ntype = "thing"\n', "agent.py": AGENT},
            "[input_schema] is not a valid JSON schema",
        ),
    ],
)
def test_it_refuses_bad_bundles_saying_why(api, key, agent_id, files, says):
    response = upload(api, key, agent_id, make_bundle(files))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid"
    assert says in response.json()["detail"]


def test_it_refuses_links_garbage_and_oversize(api, key, agent_id, settings):
    response = upload(api, key, agent_id, tar_with_symlink("agent.py", "/etc/passwd"))
    assert response.status_code == 400 and "link" in response.json()["detail"]
    response = upload(api, key, agent_id, b"not an archive at all")
    assert (
        response.status_code == 400 and "neither a .tar.gz nor a .zip" in response.json()["detail"]
    )
    settings.EXECUTION_BUNDLE_MAX_BYTES = 2048
    big = make_bundle(
        {"flightdeck.toml": MANIFEST, "agent.py": AGENT, "data.bin": __import__("os").urandom(4096)}
    )
    response = upload(api, key, agent_id, big)
    assert response.status_code == 413
    assert "over the limit of 2048" in response.json()["detail"]


def _peak_memory(call):
    """(result, peak bytes Python allocated, in every thread, while `call` ran)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_it_refuses_a_huge_pax_header_without_reading_it(api, key, agent_id):
    # 1.5 GiB of header in a 1.6 MB upload: tarfile would read it whole before any check.
    data = tar_gz_with_pax_header(1536 * 1024 * 1024)
    assert len(data) < 2 * 1024 * 1024
    response, peak = _peak_memory(lambda: upload(api, key, agent_id, data))
    assert response.status_code == 400, response.text
    assert "header of" in response.json()["detail"]
    assert peak < 32 * 1024 * 1024, f"{peak} bytes allocated"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (tar_gz_with_long_name(1024 * 1024), "header of"),
        (
            make_bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "a/" * 40 + "b.py": ""}),
            "more than 32 folders deep",
        ),
        (
            make_bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "a" * 300 + ".py": ""}),
            "longer than 255",
        ),
        (zip_bomb(64 * 1024 * 1024), "unpacks to more than"),
    ],
    ids=["gnu-long-name", "deep-nesting", "long-name", "zip-bomb"],
)
def test_it_refuses_hostile_archives(api, key, agent_id, data, says):
    response = upload(api, key, agent_id, data)
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]


def test_it_counts_folders_against_the_file_limit(api, key, agent_id, settings):
    settings.EXECUTION_BUNDLE_MAX_FILES = 4
    files = {"flightdeck.toml": MANIFEST, "agent.py": AGENT}
    ok = upload(api, key, agent_id, tar_gz_with_folders(files, ["lib", "lib/a"]))
    assert ok.status_code == 201, ok.text
    response = upload(api, key, agent_id, tar_gz_with_folders(files, ["lib", "lib/a", "lib/b"]))
    assert response.status_code == 400, response.text
    assert "more than 4 files" in response.json()["detail"]


def test_it_refuses_a_zip_of_many_entries_before_parsing_them():
    from execution.bundles import BundleError, bundle_check

    data = zip_with_entries(55_000)
    outcome, peak = _peak_memory(
        lambda: pytest.raises(BundleError, bundle_check, filename="b.zip", data=data)
    )
    assert "more than" in str(outcome.value)
    assert peak < 2 * 1024 * 1024, f"{peak} bytes allocated"


def test_it_queues_a_run_and_shows_it(api, key, acme):
    agent = agent_with_bundle(acme, name="echo", code=AGENT)
    response = api.post(
        "/api/v1/runs",
        key=key,
        json={"agent": "echo", "input": {"q": 1}, "limits": {"max_steps": 5}},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    detail = api.get(f"/api/v1/runs/{run_id}", key=key).json()
    assert detail["status"] == "queued"
    assert detail["agent"] == "echo" and detail["version"] == 1
    assert detail["limits"]["max_steps"] == 5 and detail["limits"]["wall_seconds"] == 120
    assert {"step_count", "trace_id", "error", "stop_reason"} <= set(detail)
    listed = api.get("/api/v1/runs?status=queued", key=key).json()
    assert [r["id"] for r in listed] == [run_id]
    refused = api.get("/api/v1/runs?agent=ec%00ho", key=key)  # answered 500
    assert refused.status_code == 400 and list(refused.json()["detail"]) == ["agent"]
    by_id = api.post("/api/v1/runs", key=key, json={"agent": str(agent.id), "version": 1})
    assert by_id.status_code == 202


def test_it_refuses_bad_runs_with_clear_errors(api, key, acme):
    agent_with_bundle(acme, name="echo", code=AGENT)
    cases = [
        ({"agent": "ghost"}, "no agent 'ghost'"),
        ({"agent": "echo", "version": 9}, "has no version 9"),
        ({"agent": "echo", "limits": {"max_stepz": 3}}, "unknown limits ['max_stepz']"),
        ({"agent": "echo", "limits": {"wall_seconds": -1}}, "must be a positive whole number"),
        # These answered 500, or were accepted and failed the run later.
        ({"agent": "²"}, "'agent'"),
        ({"agent": "echo", "limits": {"memory_mb": 0.0001}}, "memory_mb must be a positive whole"),
        ({"agent": "echo", "limits": {"cpu_seconds": "x"}}, "cpu_seconds must be a positive whole"),
        ({"agent": "echo", "input": {"text": "a\x00b"}}, "'input'"),
        ({"agent": "echo", "input": nested(100)}, "nested more than"),
    ]
    for body, says in cases:
        response = api.post("/api/v1/runs", key=key, json=body)
        assert response.status_code == 400, (body, response.text)
        assert says in str(response.json()["detail"]), (body, response.json())
    assert api.post("/api/v1/runs", key=key, json={}).json()["error"] == "invalid"
    deep = '{"agent": "echo", "input": ' + "[" * 5000 + "]" * 5000 + "}"
    response = api.post(
        "/api/v1/runs", key=key, content=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]
    whole = api.post("/api/v1/runs", key=key, json={"agent": "echo", "limits": {"max_steps": 5.0}})
    assert whole.status_code == 202, whole.text
    with tenant_scope(acme):
        assert Run.objects.get().limits["max_steps"] == 5


def nested(depth: int):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "table,says",
    [
        ("[limits]\nmemory_mb = nan", "memory_mb must be a positive whole number, got nan"),
        ("[limits]\nmemory_mb = 0.0001", "memory_mb must be a positive whole number"),
        ("[limits]\nwall_seconds = inf", "wall_seconds must be a positive whole number"),
        ('[rate_limits]\nllm_per_minute = "x"', "llm_per_minute must be a positive whole number"),
        ("[rate_limits]\ntools_per_minute = -5", "tools_per_minute must be a positive whole"),
        ("[rate_limits]\nllm_per_minute = 1e308", "llm_per_minute=1e+308 is above the platform"),
        ('rate_limits = "fast"', "[rate_limits] must be a table"),
    ],
)
def test_it_refuses_manifest_limits_that_are_not_whole_numbers(api, key, agent_id, table, says):
    files = {"flightdeck.toml": MANIFEST + table + "\n", "agent.py": AGENT}
    response = upload(api, key, agent_id, make_bundle(files))
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("timeout_seconds", -1),
        ("timeout_seconds", 1e308),
        ("timeout_seconds", 0),
        ("credential_header", "X-Key\r\nX-Injected: 1"),
        ("credential_header", "X Key"),
        ("credential_format", "Bearer {}\r\nX-Injected: 1"),
    ],
)
def test_it_refuses_tool_definitions_with_bad_fields(api, acme, make_key, field, value):
    tool = {"name": "lookup", "url": "https://api.example.com/lookup", field: value}
    response = api.post("/api/v1/tools", key=make_key(acme, "read", "write"), json=tool)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid" and list(body["detail"]) == [field], body


INPUT_SCHEMA = """
[input_schema]
type = "object"
required = ["question"]
[input_schema.properties.question]
type = "string"
"""


def test_it_refuses_an_input_the_manifest_refuses(api, key, acme):
    agent_with_bundle(acme, name="asker", code=AGENT, manifest=MANIFEST + INPUT_SCHEMA)
    cases = [
        (None, "refuses this input: None is not of type 'object'"),
        ({}, "refuses this input: 'question' is a required property"),
        ({"question": 5}, "refuses this input['question']: 5 is not of type 'string'"),
    ]
    for value, says in cases:
        response = api.post("/api/v1/runs", key=key, json={"agent": "asker", "input": value})
        assert response.status_code == 400, (value, response.text)
        assert response.json()["detail"] == f"the manifest of asker v1 {says}"
    accepted = api.post(
        "/api/v1/runs", key=key, json={"agent": "asker", "input": {"question": "?"}}
    )
    assert accepted.status_code == 202, accepted.text
    with tenant_scope(acme):
        assert Run.objects.count() == 1


def test_it_cancels_a_queued_run_and_refuses_a_finished_one(api, key, acme):
    agent_with_bundle(acme, name="echo", code=AGENT)
    run_id = api.post("/api/v1/runs", key=key, json={"agent": "echo"}).json()["id"]
    response = api.post(f"/api/v1/runs/{run_id}/cancel", key=key)
    assert response.status_code == 202
    assert response.json()["status"] == "stopped" and response.json()["stop_reason"] == "cancelled"
    again = api.post(f"/api/v1/runs/{run_id}/cancel", key=key)
    assert again.status_code == 409 and "already finished" in again.json()["detail"]


def test_it_hides_other_tenants_agents_and_runs(api, acme, globex, make_key):
    agent = agent_with_bundle(globex, name="secret", code=AGENT)
    with tenant_scope(globex):
        from controlplane.services import Actor
        from execution import services

        run = services.run_create(
            tenant=globex, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
    key = make_key(acme, "read", "write")
    assert api.get(f"/api/v1/runs/{run.id}", key=key).status_code == 404
    assert api.post(f"/api/v1/runs/{run.id}/cancel", key=key).status_code == 404
    assert api.get(f"/api/v1/runs/{run.id}/steps", key=key).status_code == 404
    assert api.get(f"/api/v1/agents/{agent.id}/versions", key=key).status_code == 404
    assert upload(api, key, agent.id, b"x").status_code == 404
    assert api.get("/api/v1/runs", key=key).json() == []
    assert api.post("/api/v1/runs", key=key, json={"agent": str(agent.id)}).status_code == 400
    assert Run.all_tenants.get(pk=run.id).status == "queued"


def test_it_needs_write_scope_to_start_runs(api, acme, make_key):
    agent_with_bundle(acme, name="echo", code=AGENT)
    reader = make_key(acme, "read")
    response = api.post("/api/v1/runs", key=reader, json={"agent": "echo"})
    assert response.status_code == 403
    assert api.get("/api/v1/runs", key=reader).status_code == 200


def test_it_lists_execution_paths_in_the_openapi_schema(api):
    schema = api.get("/api/schema/", headers={"Accept": "application/json"}).json()
    for path in (
        "/api/v1/agents",
        "/api/v1/agents/{agent_ref}/versions",  # an agent id or its name
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/cancel",
    ):
        assert path in schema["paths"], path


def test_it_takes_a_bundle_made_with_tar_c_dir_dot(api, key, agent_id, tmp_path):
    import subprocess

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "flightdeck.toml").write_text(MANIFEST)
    (tmp_path / "src" / "agent.py").write_text(AGENT)
    subprocess.run(
        ["tar", "-czf", str(tmp_path / "b.tar.gz"), "-C", str(tmp_path / "src"), "."], check=True
    )
    response = upload(api, key, agent_id, (tmp_path / "b.tar.gz").read_bytes())
    assert response.status_code == 201, response.text
