"""The weather feed on a running engine: NWS alerts (a file, a directory or a URL) become
emergency runs over the zip codes of the alerts' counties, one incident treated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..adapters.feeds.alert_tracker import AlertTracker
from ..adapters.feeds.geo import ZipCountyIndex
from ..adapters.feeds.nws import AlertRejection, read_alerts
from ..adapters.feeds.weather_runs import SkippedAlert, WeatherRunsConfig, plan_weather_runs
from .operator import start_run


@dataclass(slots=True)
class WeatherFeed:
    """Reads alerts and starts runs; keeps its tracker so updates of an incident seen before
    (or its cancellation) never treat a customer twice."""

    zips: ZipCountyIndex
    config: WeatherRunsConfig = field(default_factory=WeatherRunsConfig)
    tracker: AlertTracker = field(default_factory=AlertTracker)

    def poll(self, supervisor: Any, location: str | Path, now: datetime
             ) -> tuple[list[dict[str, Any]], list[SkippedAlert], list[AlertRejection]]:
        """(progress of each run started, alerts skipped with the reason, alerts rejected)."""
        result = read_alerts(location)
        plan = plan_weather_runs(result, self.zips, self.tracker, now, self.config)
        started = [start_run(supervisor, weather_run.run) for weather_run in plan.runs]
        return started, list(plan.skipped), list(result.rejected)
