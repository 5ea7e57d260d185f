"""`lookout smoke`: the operator's one-line health check of the whole pipeline.

Submits a sample sold as cocaine in which FTIR found fentanyl, then waits until the SMS
warning built from it is recorded as handed to the SMS backend.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from services.demo import DEMO_POSTAL_CODE, demo_api_key
from shared.settings import Settings


@dataclass(frozen=True)
class SmokeResult:
    body: str
    latency: float
    backend: str


class SmokeFailedError(RuntimeError):
    pass


def demo_result(sample_id: str, canary: bool = False) -> dict[str, object]:
    """Fentanyl found in a sample sold as cocaine, in the demo region. A canary result raises
    its own signal every time and its alert goes to test subscribers only."""
    return {
        "canary": canary,
        "sample_id": sample_id,
        "collected_at": datetime.now(UTC).isoformat(),
        "location": {"postal_code": DEMO_POSTAL_CODE},
        "sold_as": "cocaine",
        "form": "powder",
        "methods": ["ftir", "fentanyl_strip"],
        "substances": [{"name": "Cocaine HCl", "method": "ftir"},
                       {"name": "Fentanyl HCl", "method": "ftir"}],
        "strips": {"fentanyl_strip": "positive"},
    }


def run_smoke(settings: Settings, api_key: str | None = None, timeout: float = 30.0) -> SmokeResult:
    key = api_key or demo_api_key(settings)
    ingest = settings.service_url(settings.ingest_port)
    alerts = settings.service_url(settings.alerts_port)
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        try:
            response = client.post(f"{ingest}/v1/drug-checks",
                                   json=demo_result(f"smoke-{uuid.uuid4()}", canary=True),
                                   headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            raise SmokeFailedError(f"ingest is not answering at {ingest}: {exc}") from exc
        if response.status_code != 202:
            raise SmokeFailedError(
                f"ingest refused the result: HTTP {response.status_code} {response.text}")
        event_id = response.json()["event_id"]
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                found = client.get(
                    f"{alerts}/v1/deliveries", params={"evidence_event_id": event_id},
                    headers={"Authorization": f"Bearer {settings.admin_token}"},
                )
            except httpx.HTTPError as exc:
                raise SmokeFailedError(f"alerts is not answering at {alerts}: {exc}") from exc
            if found.status_code != 200:
                raise SmokeFailedError(f"alerts answered HTTP {found.status_code}: {found.text}")
            handed = [d for d in found.json() if d["handed_at"]]
            if handed:
                return SmokeResult(handed[0]["body"], time.monotonic() - started,
                                   handed[0]["backend"])
            failed = [d for d in found.json() if d["status"] in ("failed", "skipped")]
            if failed:
                raise SmokeFailedError(f"the SMS was not sent: {failed[0]}")
            time.sleep(0.1)
    raise SmokeFailedError(
        f"no SMS handed to the SMS backend within {timeout:.0f}s of the submission "
        f"(event {event_id}); check the relay, detection and alerts-worker logs")
