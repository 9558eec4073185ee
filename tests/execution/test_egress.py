"""Where tools may connect: inward addresses refused unless the operator lists their
networks, the platform's own listeners always, the checked address pinned for the
connection, no redirects, and allowlist entries checked when they are added."""

import ipaddress

import httpx
import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import AllowedHost
from execution.retry import UpstreamError
from execution.tools.egress import PinnedTransport, address_refusal
from tests.execution.bundles import run_now
from tests.execution.upstream import caller


def allow(tenant, *hosts):
    with tenant_scope(tenant):
        for host in hosts:
            services.allowed_host_add(tenant=tenant, host=host, actor=Actor.system())


def call_each(tenant, urls, *, webhook: str = ""):
    """http_request on each URL (then the webhook tool, if one is named), from an agent."""
    calls = [["http_request", {"url": url}] for url in urls] + ([[webhook, {}]] if webhook else [])
    agent = caller(tenant, ["http_request", webhook] if webhook else ["http_request"])
    run = run_now(tenant, agent, input={"calls": calls})
    assert run.status == "succeeded", run.error
    return run.output


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # v4-mapped: judged by the IPv4 it carries
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_it_refuses_inward_addresses(address, says):
    assert says in address_refusal(ipaddress.ip_address(address), 443)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_it_lets_public_addresses_through(address):
    assert address_refusal(ipaddress.ip_address(address), 443) is None


def test_it_refuses_allowlisted_hosts_that_point_inward(acme, transactional_db, upstream):
    port = upstream.server_address[1]
    allow(acme, f"127.0.0.1:{port}", f"localhost:{port}", f"[::ffff:127.0.0.1]:{port}")
    allow(acme, "169.254.169.254", "10.0.0.1", "[fd00:ec2::254]", f"0.0.0.0:{port}")
    with tenant_scope(acme):
        services.tool_definition_create(
            tenant=acme, actor=Actor.system(), name="inward", url=upstream.base + "/hook"
        )
    urls = [
        upstream.base + "/a",
        f"http://localhost:{port}/b",
        f"http://[::ffff:127.0.0.1]:{port}/c",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[fd00:ec2::254]/",
        f"http://0.0.0.0:{port}/d",
    ]
    output = call_each(acme, urls, webhook="inward")
    for url, result in zip(urls + ["webhook"], output, strict=True):
        assert result.get("error") == "ToolError", (url, result)
        assert "refused to connect" in result["message"], (url, result)
        assert "EGRESS_ALLOW_PRIVATE_NETWORKS" in result["message"], (url, result)
    assert upstream.hits == {}


def test_it_reaches_networks_the_operator_lists_keeping_the_host_name(
    acme, transactional_db, upstream, settings
):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8", "::1/128"]
    port = upstream.server_address[1]
    allow(acme, f"localhost:{port}")
    (result,) = call_each(acme, [f"http://localhost:{port}/named"])
    assert result["ok"]["status"] == 200
    assert upstream.seen_headers[0]["Host"] == f"localhost:{port}"


def test_it_refuses_the_platforms_own_listeners_even_when_listed(
    acme, transactional_db, upstream, messages_api, settings, live_server
):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    port = upstream.server_address[1]
    web_port = int(live_server.url.rsplit(":", 1)[1])
    llm_port = int(messages_api.url.rsplit(":", 1)[1])
    allow(acme, f"127.0.0.1:{port}", f"127.0.0.1:{web_port}", f"127.0.0.1:{llm_port}")
    settings.WEB_PORT = web_port
    before = messages_api.requests
    output = call_each(
        acme,
        [f"http://127.0.0.1:{web_port}/api/v1/health", f"http://127.0.0.1:{llm_port}/v1/models"],
    )
    # The OTLP gRPC listener, here said to be where `upstream` listens.
    settings.OTLP_GRPC_ADDRESS = f"127.0.0.1:{port}"
    output += call_each(acme, [upstream.base + "/otlp"])
    for result in output:
        assert "platform's own listeners" in result.get("message", ""), result
    assert upstream.hits == {} and messages_api.requests == before


def test_it_connects_to_the_address_it_checked(upstream, settings):
    """A name whose DNS answer changes between the check and the connection (rebinding)
    reaches only the address that was checked; each new connection is checked again."""
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    asked = []

    def rebinding(host, port):
        asked.append(host)
        return answers[min(len(asked), 2) - 1]

    port = upstream.server_address[1]
    with httpx.Client(transport=PinnedTransport(resolver=rebinding)) as client:
        response = client.get(f"http://rebind.example:{port}/pinned")
        assert response.status_code == 200 and asked == ["rebind.example"]
        assert upstream.seen_headers[0]["Host"] == f"rebind.example:{port}"
        with pytest.raises(UpstreamError, match="169.254.169.254 is in 169.254.169.254/32"):
            client.get(f"http://rebind.example:{port}/again")
    assert list(upstream.hits) == ["/pinned"]


def test_it_follows_no_redirects(acme, transactional_db, upstream, settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    upstream.plan["/away"] = [(302, {"location": "http://169.254.169.254/latest/"})]
    allow(acme, f"127.0.0.1:{upstream.server_address[1]}")
    (result,) = call_each(acme, [upstream.base + "/away"])
    assert result["ok"]["status"] == 302
    assert list(upstream.hits) == ["/away"]


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("a:b", "'b' is not a port"),
        ("api.example.com:0", "is not a port"),
        ("api.example.com:99999", "is not a port"),
        ("", "may not be blank"),
        ("api example.com", "contains spaces"),
        ("https://api.example.com/v1", "is a URL"),
        ("api.example.com/v1", "is a URL"),
        ("user@api.example.com", "is a URL"),
        ("::1", "IPv6 address goes in brackets"),
        ("[::1", "not closed"),
        ("[nope]:80", "not an IPv6 address"),
        ("1.2.3", "not an IPv4 address"),
        ("-bad-.example.com", "not a host name"),
        ("a..example.com", "not a host name"),
    ],
)
def test_it_refuses_malformed_allowlist_entries_naming_the_field(api, acme, make_key, host, says):
    key = make_key(acme, "read", "write", "admin")
    response = api.post("/api/v1/allowed-hosts", key=key, json={"host": host})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid" and says in body["detail"]["host"][0], body


def test_it_takes_well_formed_allowlist_entries(api, acme, make_key):
    key = make_key(acme, "read", "write", "admin")
    for host in (
        "api.example.com",
        "*.example.com",
        "api.example.com:8443",
        "10.0.0.5",
        "[fd00::5]:80",
    ):
        response = api.post("/api/v1/allowed-hosts", key=key, json={"host": host})
        assert response.status_code == 201, response.text


def test_it_ignores_a_malformed_entry_stored_before_entries_were_checked(
    acme, transactional_db, upstream, settings
):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    AllowedHost.all_tenants.create(tenant=acme, host="a:b")
    allow(acme, f"127.0.0.1:{upstream.server_address[1]}")
    (result,) = call_each(acme, [upstream.base + "/after"])
    assert result["ok"]["status"] == 200
