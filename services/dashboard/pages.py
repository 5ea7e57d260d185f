"""The server-rendered pages (Now, review queue, workbench, trends, drug supply, map,
referrals, performance), their CSV exports and the alert flyer. Each handler asks the read
model (`repository`, the dashboard's own tables) and renders one template; pages refresh
themselves live (static/live.js) by fetching themselves again when the stream says so."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from services.dashboard import geo, repository, saved_views
from services.dashboard.flyer import Flyer, flyer_pdf
from services.dashboard.security import PageError, SignedInOfficial
from services.dashboard.templating import render
from shared.csvexport import csv_text
from shared.gsm import GSM7_BASIC, GSM7_EXTENDED, is_gsm7, segment_count
from shared.web import AppSettings, DbSession

router = APIRouter(tags=["pages"])

Days = Annotated[int, Query(ge=1, le=3660)]
# The filter forms send an empty date field as `start=`: no date, not a 422.
OptionalDate = Annotated[date | None, BeforeValidator(lambda v: v or None)]
Bucket = Literal["day", "week"]
RANGES = (7, 28, 90)
LINE_LIST_ON_PAGE = 100  # the latest samples on the page; the CSV export has every one
FLYER_STATUSES = ("approved", "sending", "sent")
STOP_WORD = re.compile(r"\bSTOP\b")


def _now() -> datetime:
    return datetime.now(UTC)


def _csv(name: str, header: list[str], rows: list[list[object]]) -> Response:
    return Response(csv_text(header, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _substance(substance_id: str | None) -> str:
    return repository.substance_name(substance_id)


@router.get("/", include_in_schema=False)
def now_page(request: Request, session: DbSession, signed: SignedInOfficial) -> Response:
    now = _now()
    page = repository.now_page(session, now)
    return render(request, "pages/now.html", {"page": page, "now": now}, active="now")


@router.get("/review", include_in_schema=False)
def review_queue(request: Request, session: DbSession, signed: SignedInOfficial) -> Response:
    queue = repository.review_queue(session, _now())
    return render(request, "pages/queue.html", {"queue": queue}, active="review")


def _workbench(session: DbSession, alert_id: uuid.UUID) -> repository.Workbench:
    bench = repository.workbench(session, alert_id)
    if bench is None:
        raise PageError(404, "Alert not found",
                        f"No alert {alert_id} in the dashboard's read model (yet).")
    return bench


@router.get("/alerts/{alert_id}", include_in_schema=False)
def workbench(request: Request, session: DbSession, signed: SignedInOfficial,
              alert_id: uuid.UUID) -> Response:
    bench = _workbench(session, alert_id)
    texts = {lang: {"text": text, "chars": len(text),
                    "segments": bench.segments.get(lang) or segment_count(text),
                    "gsm7": is_gsm7(text), "stop": bool(STOP_WORD.search(text))}
             for lang, text in sorted(bench.texts.items())}
    # what dash-auth's review_actions.html reads
    alert = {"id": str(bench.alert_id), "status": bench.status, "texts": bench.texts,
             "first_approvals": [], "second_reviewer": False}
    return render(request, "pages/workbench.html", {
        "bench": bench, "alert": alert, "texts": texts, "substance": _substance(
            bench.substance_id), "can_review": signed.official.has_role("reviewer")
        and signed.official.covers(bench.region_id),
        "flyer": bench.status in FLYER_STATUSES, "gsm7_basic": "".join(sorted(GSM7_BASIC)),
        "gsm7_extended": "".join(sorted(GSM7_EXTENDED))}, active="review")


def _join_keyword(region_id: str, region_name: str) -> str:
    last = region_id.rsplit("/", 1)[-1]
    return f"JOIN {last}" if re.fullmatch(r"\d{5}", last) else f"JOIN {region_name}"


@router.get("/alerts/{alert_id}/flyer.pdf", include_in_schema=False)
def flyer(session: DbSession, settings: AppSettings, signed: SignedInOfficial,
          alert_id: uuid.UUID) -> Response:
    """A one-page PDF of the approved text, to print and post, with a QR code to join."""
    bench = _workbench(session, alert_id)
    if bench.status not in FLYER_STATUSES:
        raise PageError(409, "Not approved", "A flyer is made from an approved alert only.")
    title = (f"Drug alert: {_substance(bench.substance_id)}" if bench.substance_id
             else "Overdose alert") + f" in {bench.region_name}"
    pdf = flyer_pdf(Flyer(title=title, severity=bench.severity, region_name=bench.region_name,
                          texts=bench.texts, approved_by=bench.approved_by,
                          approved_at=bench.approved_at, sms_number=settings.twilio_from,
                          join_keyword=_join_keyword(bench.region_id, bench.region_name)))
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="lookout-alert-{alert_id}.pdf"'})


def _range(days: int, start: date | None, end: date | None) -> dict[str, object]:
    return {"days": days, "start": start, "end": end, "ranges": RANGES}


def _views(request: Request, session: DbSession, signed: SignedInOfficial,
           page: str) -> dict[str, object]:
    """The "save this view" form's page and filters, and the official's views of the page."""
    return {"view_page": page, "query": request.url.query,
            "views": saved_views.list_views(session, signed.account.id, page)}


@router.get("/trends", include_in_schema=False)
def trends(request: Request, session: DbSession, signed: SignedInOfficial,
           region: str = "", days: Days = 28, start: OptionalDate = None,
           end: OptionalDate = None, bucket: Bucket = "day",
           source: Literal["reports", "results"] = "reports", report_source: str = "",
           fatal: Literal["", "yes", "no"] = "") -> Response:
    trend = repository.trends(session, _now(), region_id=region or None, days=days,
                              start=start, end=end, bucket=bucket, source=source,
                              report_source=report_source or None,
                              fatal=None if not fatal else fatal == "yes")
    rows = [[p.start.isoformat(), p.count, _round(p.expected), _round(p.upperbound), p.colour]
            for p in trend.points]
    tree = repository.region_tree(session)
    return render(request, "pages/trends.html", {
        "trend": trend, "rows": rows, "tree": tree, "region": region, "bucket": bucket,
        "source": source,
        "report_source": report_source, "fatal": fatal,
        **_views(request, session, signed, "trends"), **_range(days, start, end)},
        active="trends")


@router.get("/trends.csv", include_in_schema=False)
def trends_csv(session: DbSession, signed: SignedInOfficial, region: str = "",
               days: Days = 28, start: OptionalDate = None, end: OptionalDate = None,
               bucket: Bucket = "day", source: Literal["reports", "results"] = "reports",
               report_source: str = "", fatal: Literal["", "yes", "no"] = "") -> Response:
    trend = repository.trends(session, _now(), region_id=region or None, days=days,
                              start=start, end=end, bucket=bucket, source=source,
                              report_source=report_source or None,
                              fatal=None if not fatal else fatal == "yes")
    return _csv("lookout-trends.csv",
                ["start", "region", "source", "count", "expected", "upper_bound", "p_value",
                 "colour", "from_detector"],
                [[p.start.isoformat(), region or "all", source, p.count, p.expected,
                  p.upperbound, p.p_value, p.colour, p.from_detector] for p in trend.points])


@router.get("/supply", include_in_schema=False)
def supply(request: Request, session: DbSession, signed: SignedInOfficial, region: str = "",
           days: Days = 90, start: OptionalDate = None, end: OptionalDate = None,
           bucket: Bucket = "week") -> Response:
    data = repository.drug_supply(session, _now(), region_id=region or None, days=days,
                                  start=start, end=end, bucket=bucket,
                                  line_limit=LINE_LIST_ON_PAGE)
    # positivity as one row per bucket, one column per high-risk substance
    substances = sorted({p.substance for p in data.positivity})
    buckets: dict[date, dict[str, float]] = {}
    for p in data.positivity:
        buckets.setdefault(p.start, {})[p.substance] = round(100 * p.rate, 1)
    positivity = [[b.isoformat(), *[row.get(s, 0.0) for s in substances]]
                  for b, row in sorted(buckets.items())]
    return render(request, "pages/supply.html", {
        "data": data, "region": region, "bucket": bucket, "substances": substances,
        "positivity": positivity, "tree": repository.region_tree(session),
        **_views(request, session, signed, "supply"), **_range(days, start, end)},
        active="supply")


LINE_LIST_HEADER = ["collected_at", "site", "sample_id", "region", "sold_as", "form",
                    "methods", "found", "strips", "adverse_reaction", "sold_as_matched"]


def _found(row: repository.SampleRow) -> str:
    return "; ".join(f"{s.name} ({s.method}" + (f", {s.confidence:.0%}" if s.confidence else "")
                     + ")" for s in row.substances)


@router.get("/supply.csv", include_in_schema=False)
def supply_csv(session: DbSession, signed: SignedInOfficial, region: str = "",
               days: Days = 90, start: OptionalDate = None,
               end: OptionalDate = None) -> Response:
    """The line list: every sample of the range (not only the page's first rows)."""
    data = repository.drug_supply(session, _now(), region_id=region or None, days=days,
                                  start=start, end=end, line_limit=1_000_000)
    return _csv("lookout-drug-supply.csv", LINE_LIST_HEADER, [
        [r.collected_at.isoformat(), r.site_name or str(r.site_id), r.sample_id,
         r.region_name, r.sold_as, r.form, " ".join(r.methods), _found(r),
         " ".join(f"{k}:{v}" for k, v in sorted(r.strips.items())), r.adverse_reaction,
         r.sold_as_matched] for r in data.line_list])


@router.get("/map", include_in_schema=False)
def map_page(request: Request, session: DbSession, signed: SignedInOfficial,
             days: Days = 28) -> Response:
    now = _now()
    areas = repository.map_areas(session, now, days=days)
    counties, zips = areas["county"], areas["postal_code"]
    peak = max((a.reports + a.results for a in counties), default=0)
    us: list[dict[str, object]] = []
    elsewhere: list[dict[str, object]] = []
    for area in counties:
        fips = geo.county_fips(area.region_id)
        total = area.reports + area.results
        level = 0 if not total else 1 + min(2, int(3 * total / (peak + 1)))
        (us if fips else elsewhere).append({"area": area, "fips": fips, "level": level})
    points: list[dict[str, object]] = []
    for area in zips:
        xy = geo.zip_point(area.region_id)
        if xy is not None:
            points.append({"area": area, "x": round(xy[0], 1), "y": round(xy[1], 1),
                           "r": round(1.5 + min(6.0, (area.reports + area.results) ** 0.5),
                                      1)})
    return render(request, "pages/map.html", {
        "us": us, "elsewhere": elsewhere, "points": points, "days": days,
        "topology": geo.TOPOLOGY_URL, "ranges": RANGES,
        **_views(request, session, signed, "map")}, active="map")


@router.get("/referrals", include_in_schema=False)
def referrals(request: Request, session: DbSession, signed: SignedInOfficial,
              days: Days = 90, region: str = "") -> Response:
    funnel = repository.referrals_funnel(session, _now(), days=days, region_id=region or None)
    return render(request, "pages/referrals.html", {
        "funnel": funnel, "days": days, "ranges": RANGES, "region": region},
        active="referrals")


@router.get("/performance", include_in_schema=False)
def performance(request: Request, session: DbSession, signed: SignedInOfficial,
                days: Days = 90) -> Response:
    perf = repository.performance(session, _now(), days=days)
    month_rows = [[month, region, n] for region, month, n in perf.alerts_per_region_month]
    return render(request, "pages/performance.html", {
        "perf": perf, "month_rows": month_rows, "days": days, "ranges": RANGES},
        active="performance")

