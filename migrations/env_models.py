"""Imports every service's models so that `Base.metadata` holds all tables.

Each service adds its models module here when it gets tables.
"""

from __future__ import annotations

import services.alerts.models
import services.dashboard.account_models
import services.dashboard.models
import services.ingest.models
import services.referrals.models  # noqa: F401
import shared.relay  # noqa: F401
