"""Certificate pinning against the simulator's self-signed certificates."""

from __future__ import annotations

import pytest

from snapshot.credentials import parse_api_url
from snapshot.pinning import CollectError, fingerprint, peer_certificate, pinned_context

from .harness import MB, Harness


async def test_wrong_fingerprint_is_refused_and_reported(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server, pin="AB" * 32)
    outcome = await harness.collect(server_id)
    assert (outcome.status, outcome.reason) == ("failed", "certificate")
    row = harness.server_row(server_id)
    assert row.last_error_kind == "certificate"
    assert "fingerprint mismatch" in row.last_error
    assert row.backoff_until is not None
    assert row.consecutive_failures == 1
    assert harness.rows("SELECT count(*) AS n FROM snapshots")[0].n == 0
    assert server.requests == 0, "no API request may reach a server that failed its pin"


async def test_a_changed_certificate_is_refused_after_a_good_collection(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    assert (await harness.collect(server_id)).status == "collected"
    server.rotate_certificate()
    harness.advance(600)
    server.add_traffic("0", MB)
    outcome = await harness.collect(server_id)
    assert (outcome.status, outcome.reason) == ("failed", "certificate")
    assert "fingerprint mismatch" in harness.server_row(server_id).last_error


async def test_pinned_context_verifies_instead_of_trusting_anything(harness: Harness) -> None:
    server = await harness.sim.add_server()
    url = parse_api_url(server.api_url)
    der = await peer_certificate(url, 5, harness.app.clients.egress)
    assert fingerprint(der) == server.certificate.sha256
    context = await pinned_context(url, server.certificate.sha256, 5, harness.app.clients.egress)
    import ssl

    assert context.verify_mode == ssl.CERT_REQUIRED
    other = await harness.sim.add_server()
    with pytest.raises(CollectError) as caught:
        await pinned_context(
            parse_api_url(other.api_url), server.certificate.sha256, 5, harness.app.clients.egress
        )
    assert caught.value.kind == "certificate"
