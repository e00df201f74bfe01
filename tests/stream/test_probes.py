"""The operational pages' checks on a worker app whose consumer has not started yet, as a scrape during a
worker's start-up finds it: no lag to report and not ready, rather than an error page."""

from __future__ import annotations

from stream.app import create_app
from stream.probes import consumer_lag, readiness
from stream.settings import Settings


def test_a_worker_that_is_still_starting_reports_no_lag_and_is_not_ready(tmp_path) -> None:
    app = create_app(Settings(app_id="probes-starting", data_dir=tmp_path, demo_mode=True))
    assert list(consumer_lag(app)) == []
    assert readiness(app, model_loaded=lambda: True) == {"model_loaded": True, "partitions_assigned": False, "not_rebalancing": True}
