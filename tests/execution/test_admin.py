"""Platform staff see agents and runs (with their journal) in the admin console."""

import pytest

from tests.execution.bundles import agent_with_bundle, run_now
from tests.factories import UserFactory


@pytest.mark.django_db(transaction=True)
def test_it_shows_runs_and_their_journal_to_staff(client, acme):
    agent = agent_with_bundle(
        acme, name="shown", code="def main(ctx, input):\n    return ctx.random()\n"
    )
    run = run_now(acme, agent)
    client.force_login(
        UserFactory(username="ops@flightdeck.test", is_staff=True, is_superuser=True)
    )
    listing = client.get("/admin/execution/run/")
    assert listing.status_code == 200 and run.trace_id in listing.content.decode()
    page = client.get(f"/admin/execution/run/{run.pk}/change/")
    assert page.status_code == 200 and "random" in page.content.decode()
    assert client.get(f"/admin/execution/agent/{agent.pk}/change/").status_code == 200
    assert client.get("/admin/execution/run/add/").status_code == 403
