"""The group-commit writer: many requests in one transaction, each as if alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.ingest.api import app
from services.ingest.models import DrugCheck, OutboxMessage
from services.ingest.schemas import DrugCheckIn
from services.ingest.service.common import Caller, ItemOutcome
from services.ingest.service.drug_checks import (
    Known,
    prepare_drug_checks,
    store_drug_checks,
    submit_drug_checks,
)
from services.ingest.service.sites import create_site
from shared.db import get_engine, session_scope
from shared.group_commit import GroupWriter
from shared.problems import ProblemError
from shared.settings import Settings, get_settings
from testing.builders import drug_check
from tests.ingest.conftest import DATA_ROWS


def _caller(settings: Settings, name: str) -> Caller:
    with session_scope(settings.sqlalchemy_url) as session:
        site, _ = create_site(session, name, ["results"])
    return Caller(site.id, ("results",), uuid.uuid4())


def _count(settings: Settings, model: type, *where: Any) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


class Recorder:
    """`submit_drug_checks` for one caller, remembering how many items each call got."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.calls: list[int] = []

    def __call__(self, session: Session, items: Sequence[Any], _found: Any = None
                 ) -> list[ItemOutcome]:
        self.calls.append(len(items))
        return submit_drug_checks(session, self.caller, items)


def test_the_same_sample_id_twice_in_one_group_is_a_duplicate_or_a_conflict(
    settings: Settings,
) -> None:
    caller = _caller(settings, "A")
    store = Recorder(caller)
    sent = drug_check("s-1")
    first, same, other = (DrugCheckIn.model_validate(body)
                          for body in (sent, dict(sent), {**sent, "sold_as": "heroin"}))

    async def main() -> list[list[ItemOutcome]]:
        writer = GroupWriter(settings.sqlalchemy_url)
        key = ("results", caller)
        return await asyncio.gather(*(writer.store([body], store, key)
                                      for body in (first, same, other)))

    (a,), (b,), (c,) = asyncio.run(main())
    assert store.calls == [3]  # one group, one merged call
    assert (a.status, b.status, b.id) == ("accepted", "duplicate", a.id)
    assert (c.status, c.reason, c.existing_id) == ("rejected", "conflict", a.id)
    assert (_count(settings, DrugCheck), _count(settings, OutboxMessage, DATA_ROWS)) == (1, 1)


def test_two_sites_in_one_group_are_stored_apart_and_both_kept(settings: Settings) -> None:
    stores = [Recorder(_caller(settings, name)) for name in ("A", "B")]
    body = DrugCheckIn.model_validate(drug_check("same-id"))  # ids are per site

    async def main() -> list[list[ItemOutcome]]:
        writer = GroupWriter(settings.sqlalchemy_url)
        return await asyncio.gather(*(writer.store([body], store, ("results", store.caller))
                                      for store in stores))

    outcomes = asyncio.run(main())
    assert [store.calls for store in stores] == [[1], [1]]
    assert [o[0].status for o in outcomes] == ["accepted", "accepted"]
    assert _count(settings, DrugCheck) == 2


def test_a_request_that_fails_is_rolled_back_alone(settings: Settings) -> None:
    store = Recorder(_caller(settings, "A"))

    def fails(session: Session, items: Sequence[Any], _found: Any) -> list[Any]:
        store(session, items)  # writes, then fails: its savepoint is rolled back
        raise ProblemError(409, "Conflict", "raced")

    async def main() -> list[Any]:
        writer = GroupWriter(settings.sqlalchemy_url)
        return await asyncio.gather(
            writer.store([DrugCheckIn.model_validate(drug_check("kept"))], store),
            writer.store([DrugCheckIn.model_validate(drug_check("dropped"))], fails),
            return_exceptions=True)

    kept, failed = asyncio.run(main())
    assert kept[0].status == "accepted"
    assert isinstance(failed, ProblemError) and failed.status == 409
    with session_scope(settings.sqlalchemy_url) as session:
        assert list(session.scalars(select(DrugCheck.sample_id))) == ["kept"]
    assert _count(settings, OutboxMessage, DATA_ROWS) == 1


def test_when_the_commit_fails_no_request_hears_accepted_and_nothing_is_stored(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Recorder(_caller(settings, "A"))

    def broken_commit(self: Session) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Session, "commit", broken_commit)

    async def main() -> list[Any]:
        writer = GroupWriter(settings.sqlalchemy_url)
        return await asyncio.gather(*(
            writer.store([DrugCheckIn.model_validate(drug_check(f"s-{i}"))], store)
            for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(main())
    monkeypatch.undo()
    assert [type(o) for o in outcomes] == [OSError] * 3
    assert (_count(settings, DrugCheck), _count(settings, OutboxMessage, DATA_ROWS)) == (0, 0)


def test_concurrent_single_posts_each_sample_once(settings: Settings) -> None:
    """32 concurrent requests through the app (groups form by themselves): each sample id
    is accepted once; its repeats answer 200 with the first id."""
    with session_scope(settings.sqlalchemy_url) as session:
        _, key = create_site(session, "A", ["results"])
    samples = [drug_check(f"c-{i}") for i in range(8)]
    bodies = [samples[i % 8] for i in range(32)]

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            return await asyncio.gather(*(
                client.post("/v1/drug-checks", json=body,
                            headers={"Authorization": f"Bearer {key}"}) for body in bodies))

    app.dependency_overrides[get_settings] = lambda: settings.model_copy(
        update={"ingest_rate_per_second": 0.0})
    try:
        responses = asyncio.run(main())
    finally:
        app.dependency_overrides.clear()
    by_sample: dict[str, list[httpx.Response]] = {}
    for body, response in zip(bodies, responses, strict=True):
        by_sample.setdefault(body["sample_id"], []).append(response)
    for answers in by_sample.values():
        assert sorted(r.status_code for r in answers) == [200, 200, 200, 202]
        assert len({r.json()["id"] for r in answers}) == 1
    assert (_count(settings, DrugCheck), _count(settings, OutboxMessage, DATA_ROWS)) == (8, 8)


def test_a_sample_stored_by_another_writer_after_the_lookup_is_still_a_duplicate(
    settings: Settings,
) -> None:
    """The group writer reads which sample ids a site has sent before it takes the write
    lock; another process may store one of them in between. The unique key catches it and
    the answer is still a duplicate (same content) or a conflict (other content)."""
    url = settings.sqlalchemy_url
    caller = _caller(settings, "A")
    sent = drug_check("raced")
    with session_scope(url) as session:  # "another process" stored it first
        submit_drug_checks(session, caller, [DrugCheckIn.model_validate(sent)])
    first = _count(settings, DrugCheck)

    def stale(session: Session, items: Sequence[Any]) -> Known:
        return {}  # read before the other writer's commit

    def store(session: Session, items: Sequence[Any], known: Known
              ) -> list[ItemOutcome]:
        return store_drug_checks(session, caller, items, known)

    async def main() -> list[list[ItemOutcome]]:
        writer = GroupWriter(url)
        bodies = [DrugCheckIn.model_validate(b) for b in (sent, {**sent, "sold_as": "heroin"})]
        prepared = prepare_drug_checks(caller, bodies, get_engine(url).dialect)
        return await asyncio.gather(writer.store(prepared, store, None, stale))

    ((same, other),) = asyncio.run(main())
    assert same.status == "duplicate"
    assert (other.status, other.reason) == ("rejected", "conflict")
    assert _count(settings, DrugCheck) == first == 1
    assert _count(settings, OutboxMessage, DATA_ROWS) == 1
