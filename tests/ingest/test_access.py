"""A site sees only its own submissions; keys are listed, revoked and rotated by the admin;
bodies are bounded; each key is rate limited."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from shared.settings import Settings
from testing.builders import drug_check
from tests.ingest.conftest import MakeSite, problem
from tests.ingest.test_reports import report


def test_a_site_cannot_read_another_sites_submissions(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    a, b = make_site("A"), make_site("B")
    result = ingest_client.post("/v1/drug-checks", json=drug_check("same"), headers=a).json()
    rep = ingest_client.post("/v1/overdose-reports", json=report(), headers=a).json()
    ingest_client.post("/v1/drug-checks", json=drug_check("same"), headers=b)

    mine = ingest_client.get("/v1/submissions", headers=a).json()
    assert {i["id"] for i in mine["items"]} == {result["id"], rep["id"]}
    theirs = ingest_client.get("/v1/submissions", headers=b).json()
    assert len(theirs["items"]) == 1
    assert theirs["items"][0]["id"] not in (result["id"], rep["id"])
    for path in (f"/v1/drug-checks/{result['id']}", f"/v1/overdose-reports/{rep['id']}"):
        assert ingest_client.get(path, headers=a).status_code == 200
        other = ingest_client.get(path, headers=b)
        assert other.status_code == 404
        problem(other)


def test_submissions_page_with_since_and_follow_the_cursor(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    auth = make_site("A")
    batch = ingest_client.post("/v1/drug-checks", json=[drug_check(f"p-{i}") for i in range(25)],
                               headers=auth).json()
    ingest_client.post("/v1/overdose-reports", json=[report()] * 5, headers=auth)
    seen: list[str] = []
    since = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 7}
        if since:
            params["since"] = since
        page = ingest_client.get("/v1/submissions", params=params, headers=auth).json()
        seen += [i["id"] for i in page["items"]]
        since = page["next_since"]
        if since is None:
            break
    assert len(seen) == len(set(seen)) == 30
    assert {i["id"] for i in batch["items"]} <= set(seen)
    later = ingest_client.get("/v1/submissions", params={"since": "2999-01-01T00:00:00Z"},
                              headers=auth).json()
    assert later == {"items": [], "next_since": None}
    bad = ingest_client.get("/v1/submissions", params={"since": "yesterday"}, headers=auth)
    assert bad.status_code == 422
    assert problem(bad)["errors"][0]["field"] == "/since"


def test_a_results_only_key_lists_only_results(
    ingest_client: TestClient, ingest_settings: Settings
) -> None:
    admin = {"Authorization": f"Bearer {ingest_settings.admin_token}"}
    made = ingest_client.post("/v1/admin/sites", json={"name": "S"}, headers=admin).json()
    both = {"Authorization": f"Bearer {made['api_key']}"}
    ingest_client.post("/v1/overdose-reports", json=report(), headers=both)
    ingest_client.post("/v1/drug-checks", json=drug_check(), headers=both)
    results_key = ingest_client.post(f"/v1/admin/sites/{made['site_id']}/keys",
                                     json={"scopes": ["results"]}, headers=admin).json()
    only = {"Authorization": f"Bearer {results_key['api_key']}"}
    assert [i["kind"] for i in ingest_client.get("/v1/submissions", headers=only)
            .json()["items"]] == ["drug_check"]
    assert sorted(i["kind"] for i in ingest_client.get("/v1/submissions", headers=both)
                  .json()["items"]) == ["drug_check", "overdose_report"]


def test_admin_lists_revokes_and_rotates_keys(
    ingest_client: TestClient, ingest_settings: Settings
) -> None:
    admin = {"Authorization": f"Bearer {ingest_settings.admin_token}"}
    made = ingest_client.post("/v1/admin/sites", json={"name": "S", "scopes": ["results"]},
                              headers=admin).json()
    site, first = made["site_id"], made["api_key"]
    auth1 = {"Authorization": f"Bearer {first}"}
    assert ingest_client.post("/v1/drug-checks", json=drug_check(),
                              headers=auth1).status_code == 202

    sites = ingest_client.get("/v1/admin/sites", headers=admin).json()
    assert [(s["name"], s["active_keys"]) for s in sites] == [("S", 1)]
    keys = ingest_client.get(f"/v1/admin/sites/{site}/keys", headers=admin).json()
    assert len(keys) == 1 and "api_key" not in keys[0] and keys[0]["prefix"] == first[:8]
    key_id = keys[0]["id"]

    rotated = ingest_client.post(f"/v1/admin/sites/{site}/keys/{key_id}/rotate", headers=admin)
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["scopes"] == ["results"] and new["api_key"] != first
    old_again = ingest_client.post("/v1/drug-checks", json=drug_check(), headers=auth1)
    assert old_again.status_code == 401
    problem(old_again)
    auth2 = {"Authorization": f"Bearer {new['api_key']}"}
    assert ingest_client.post("/v1/drug-checks", json=drug_check(),
                              headers=auth2).status_code == 202

    extra = ingest_client.post(f"/v1/admin/sites/{site}/keys", json={"scopes": ["reports"]},
                               headers=admin).json()
    revoked = ingest_client.post(f"/v1/admin/sites/{site}/keys/{extra['id']}/revoke",
                                 headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    gone = ingest_client.post("/v1/overdose-reports", json=report(),
                              headers={"Authorization": f"Bearer {extra['api_key']}"})
    assert gone.status_code == 401
    assert ingest_client.get(f"/v1/admin/sites/{site}/keys",
                             headers={"Authorization": f"Bearer {first}"}).status_code == 403
    missing = ingest_client.get("/v1/admin/sites/00000000-0000-0000-0000-000000000000/keys",
                                headers=admin)
    assert missing.status_code == 404


def test_a_json_body_over_the_limit_is_413_problem(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    auth = make_site("A")
    big = [drug_check(f"big-{i}", notes="x" * 1500) for i in range(700)]  # > 1 MB
    response = ingest_client.post("/v1/drug-checks", json=big, headers=auth)
    assert response.status_code == 413
    problem(response)

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100_000

    chunked = ingest_client.post("/v1/drug-checks", content=chunks(),
                                 headers={**auth, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    metrics = ingest_client.get("/metrics").text
    assert ('lookout_ingest_submissions_total{kind="drug_check",outcome="rejected",'
            'reason="too_large"}') in metrics


def test_each_key_is_rate_limited_with_retry_after(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    ingest_settings.ingest_rate_per_second = 0.5
    ingest_settings.ingest_rate_burst = 3
    a, b = make_site("A"), make_site("B")
    codes = [ingest_client.post("/v1/drug-checks", json=drug_check(), headers=a).status_code
             for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    limited = ingest_client.post("/v1/drug-checks", json=drug_check(), headers=a)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    problem(limited)
    assert ingest_client.post("/v1/drug-checks", json=drug_check(),
                              headers=b).status_code == 202  # another key has its own bucket
