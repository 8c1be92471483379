"""``GET /metrics`` on the API: Prometheus text format, no token needed."""

from __future__ import annotations

import pytest
from tests.integration.conftest import World

pytestmark = pytest.mark.timeout(20)


async def test_metrics_are_served_without_a_token_in_prometheus_text_format(
    world: World,
) -> None:
    async with world.caller() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for name, kind in (
        ("tradewire_events_published_total", "counter"),
        ("tradewire_events_consumed_total", "counter"),
        ("tradewire_events_retried_total", "counter"),
        ("tradewire_events_dead_lettered_total", "counter"),
        ("tradewire_bus_partition_lag", "gauge"),
        ("tradewire_bus_partition_pending", "gauge"),
        ("tradewire_dlq_depth", "gauge"),
        ("tradewire_bus_paused", "gauge"),
        ("tradewire_event_processing_seconds", "histogram"),
        ("tradewire_event_age_seconds", "histogram"),
    ):
        assert f"# TYPE {name} {kind}\n" in text, name
    assert "_created" not in text
