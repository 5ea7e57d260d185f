"""The stream processors' logic over table-like mappings (Faust tables in the worker, plain
dicts in unit tests). Event time drives everything; every table write is idempotent for a
redelivered message (offset watermarks per source partition, or trigger ids), and every
read sees the table as it was before the message (`asof`: each value keeps an undo log of
the uncommitted messages that wrote it), so a message delivered again after a crash raises
exactly the signals it raised the first time, however far the recovered tables ran ahead.

Tables (keys are strings):
- spike_counts  "<area>" -> {"b": newest bucket start, "f": first, "c": {bucket start: count},
                "o": {partition: last offset counted}}: one value (one changelog write) per
                report, buckets older than a late report can need are dropped
- marks         "c|<region>" -> {"b": newest day}
- episodes      "<region>|<kind or pattern>|<substance>" -> open episode (see `episodes`)
- seen          "<region>|<substance>", "*|<substance>" -> {"t": last seen, "e": trigger}
- clusters      "<region>|<substance>" -> {"r": [[time, site, event id], ...]}
- positivity    "<region>|<day>", "<region>|<substance>|<day>" -> {"n", "o"} day counters
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from services.detection import episodes, patterns, rules, spikes
from services.detection.asof import Message
from services.detection.config import DetectionConfig, RegionConfig
from services.detection.metrics import LATE_EVENTS, SIGNALS, SUPPRESSED
from shared import substances
from shared.events import (
    ContaminationSignalV1,
    DrugCheckResultV1,
    OverdoseReportV1,
    Severity,
    SpikeSignalV1,
)

log = logging.getLogger(__name__)
PRODUCER = "detection"
DAY = 86400
WEEK_OFFSET = 4 * DAY  # 1970-01-05, the first Monday after the epoch
THRESHOLD_CACHE_MAX = 100_000

Send = Callable[[str, str], Awaitable[None]]  # (key, signal JSON)


@dataclass
class Tables:
    spike_counts: MutableMapping[str, Any]
    marks: MutableMapping[str, Any]
    episodes: MutableMapping[str, Any]
    seen: MutableMapping[str, Any]
    clusters: MutableMapping[str, Any]
    positivity: MutableMapping[str, Any]

    @classmethod
    def in_memory(cls) -> Tables:
        return cls({}, {}, {}, {}, {}, {})

    def flush(self) -> None:
        """Write the held changes of write-behind tables (see `tablecache.WriteBehind`)."""
        for table in (self.spike_counts, self.marks, self.episodes, self.seen, self.clusters,
                      self.positivity):
            flush = getattr(table, "flush", None)
            if flush is not None:
                flush()


def bucket_start(at: float, size: int) -> int:
    offset = WEEK_OFFSET if size == 7 * DAY else 0
    return int((at - offset) // size) * size + offset


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def area_name(area: str, region_id: str, region_name: str) -> str:
    if area == region_id:
        return region_name
    parts = area.split("/")
    if len(parts) >= 3:
        return f"{parts[2].replace('-', ' ').title()}, {parts[1].upper()}"
    return parts[-1].upper()


class Processor:
    def __init__(self, config: DetectionConfig, tables: Tables, send: Send) -> None:
        self.config = config
        self.t = tables
        self.send = send
        self._thresholds: dict[tuple[str, int], tuple[int, int | None]] = {}
        self._versions: dict[str, int] = {}  # bumped when a past bucket of an area changes
        # committed offset per source partition (undo entries below it are dropped)
        self.committed_reports: Mapping[int, int | None] = {}
        self.committed_results: Mapping[int, int | None] = {}

    # ------------------------------------------------------------------ spikes

    async def on_report(self, report: OverdoseReportV1, partition: int, offset: int) -> None:
        cfg_area = self.config.area_of(report.region_id)
        cfg = self.config.for_region(cfg_area)
        size = self.config.bucket_seconds
        at = report.occurred_at.timestamp()
        bucket = bucket_start(at, size)
        msg = Message(partition, offset, self.committed_reports)
        state = msg.get(self.t.spike_counts, cfg_area)
        newest = int(state["b"]) if state else bucket
        if at < newest - self.config.grace_seconds:
            LATE_EVENTS.labels("spikes").inc()
            log.warning("spikes: late report %s for %s at %s, newest bucket %s: not counted",
                        report.event_id, cfg_area, report.occurred_at.isoformat(),
                        _utc(newest).isoformat())
            return
        history = spikes.history_length(cfg.method, cfg.params)
        counted = self._count(msg, cfg_area, state, bucket, history)
        state = msg.get(self.t.spike_counts, cfg_area)
        newest, first = int(state["b"]), int(state["f"])
        to_check = [bucket]
        if bucket < newest:
            # A late report within the grace period: its own bucket is re-evaluated, and so
            # is the newest one, whose history it changed.
            if counted:
                self._versions[cfg_area] = self._versions.get(cfg_area, 0) + 1
            to_check.append(newest)
        # Like R's NA: no evaluation before the area has the method's history.
        needed = history * size
        for b in to_check:
            if b - first >= needed:
                await self._evaluate_bucket(msg, cfg_area, b, cfg, report)

    def _count(self, msg: Message, area: str, state: dict[str, Any] | None, bucket: int,
               history: int) -> bool:
        """Count a report in its area's bucket unless this (partition, offset) was counted
        already (a redelivery after a crash). Buckets a late report could no longer need
        are dropped when the newest bucket moves on."""
        state = state or {"b": bucket, "f": bucket, "c": {}, "o": {}}
        partition, offset = msg.partition, msg.offset
        if offset <= state["o"].get(str(partition), -1):
            return False
        counts = dict(state["c"])
        counts[str(bucket)] = counts.get(str(bucket), 0) + 1
        newest = max(int(state["b"]), bucket)
        if newest > int(state["b"]):
            keep = newest - self.config.grace_seconds - (history + 1) * self.config.bucket_seconds
            counts = {b: n for b, n in counts.items() if int(b) >= keep}
        msg.put(self.t.spike_counts, area, {
            "b": newest, "f": min(int(state["f"]), bucket), "c": counts,
            "o": {**state["o"], str(partition): offset}})
        return True

    def _history(self, counts: dict[str, int], bucket: int, cfg: RegionConfig
                 ) -> tuple[list[float], list[dt.date] | None]:
        size = self.config.bucket_seconds
        length = spikes.history_length(cfg.method, cfg.params)
        starts = [bucket - (length - i) * size for i in range(length)]
        history = [float(counts.get(str(b), 0)) for b in starts]
        dates = None
        if cfg.method == "farrington-flexible":
            dates = [_utc(b).date() for b in [*starts, bucket]]
        return history, dates

    def _threshold(self, msg: Message, area: str, bucket: int, cfg: RegionConfig
                   ) -> int | None:
        counts = msg.get(self.t.spike_counts, area)["c"]
        if msg.ahead(self.t.spike_counts, area):  # a redelivery: its own history, no cache
            history, dates = self._history(counts, bucket, cfg)
            return spikes.alarm_threshold(cfg.method, cfg.params, history, dates)
        version = self._versions.get(area, 0)
        cached = self._thresholds.get((area, bucket))
        if cached is not None and cached[0] == version:
            return cached[1]
        history, dates = self._history(counts, bucket, cfg)
        threshold = spikes.alarm_threshold(cfg.method, cfg.params, history, dates)
        if len(self._thresholds) >= THRESHOLD_CACHE_MAX:
            self._thresholds.clear()
        self._thresholds[(area, bucket)] = (version, threshold)
        return threshold

    async def _evaluate_bucket(self, msg: Message, area: str, bucket: int, cfg: RegionConfig,
                               report: OverdoseReportV1) -> None:
        counts = msg.get(self.t.spike_counts, area)["c"]
        count = int(counts.get(str(bucket), 0))
        threshold = self._threshold(msg, area, bucket, cfg)
        if threshold is None or count < threshold:
            return
        history, dates = self._history(counts, bucket, cfg)
        ev = spikes.evaluate(cfg.method, cfg.params, history, count, dates, cfg.critical_score)
        if not ev.alarm:
            return
        size = self.config.bucket_seconds
        name = area_name(area, report.region_id, report.region_name)

        def build(event_id: uuid.UUID) -> str:
            return SpikeSignalV1(
                event_id=event_id, producer=PRODUCER, region_id=area, region_name=name,
                severity=ev.severity, occurred_at=report.occurred_at,
                evidence_event_ids=[report.event_id], window_start=_utc(bucket),
                window_end=_utc(bucket + size), observed=ev.observed, expected=ev.expected,
                upperbound=ev.upperbound if ev.upperbound is not None else 0.0,
                method=cfg.method, score=round(ev.score, 6),
            ).model_dump_json()

        await self._gate(msg, area, "spike", "overdose", ev.severity,
                         report.occurred_at.timestamp(),
                         _utc(bucket).isoformat(), str(report.event_id), build, "spike")

    # ------------------------------------------------------------------ contamination

    async def on_result(self, result: DrugCheckResultV1, partition: int, offset: int) -> None:
        if result.canary:
            await self._send_canary(result)
            return
        region = result.region_id
        cfg = self.config.for_region(region)
        at = result.collected_at.timestamp()
        msg = Message(partition, offset, self.committed_results)
        seen = self.t.seen
        candidates: list[patterns.Candidate] = []
        for signal in rules.unexpected_adulterants(result):
            sub = substances.get_substance(signal.substance_id)
            candidates.append(patterns.Candidate(
                "unexpected_adulterant", patterns.Found(sub.id, sub.name, sub.risk, True),
                signal.severity, (result.event_id,)))
        found = patterns.found_substances(result)
        for f in found:
            key = f"{region}|{f.key}"
            candidate, new_region, new_anywhere = patterns.novel(
                result, at, f, cfg, msg.get(seen, key), msg.get(seen, f"*|{f.key}"))
            if new_region is not None:
                msg.put(seen, key, new_region)
            if new_anywhere is not None:
                msg.put(seen, f"*|{f.key}", new_anywhere)
            if candidate:
                candidates.append(candidate)
        mark_key = f"c|{region}"
        mark = msg.get(self.t.marks, mark_key)
        day = patterns.day_of(at)
        if mark and at < int(mark["b"]) * DAY - self.config.grace_seconds:
            LATE_EVENTS.labels("contamination").inc()
            log.warning("contamination: late result %s for %s at %s: not counted in windows",
                        result.event_id, region, result.collected_at.isoformat())
        else:
            if mark is None or day > int(mark["b"]):
                msg.put(self.t.marks, mark_key, {"b": day})
            candidates += self._windows(msg, result, at, day, found, cfg)
        for c in candidates:
            await self._send_contamination(msg, result, c)

    def _windows(self, msg: Message, result: DrugCheckResultV1, at: float, day: int,
                 found: list[patterns.Found], cfg: RegionConfig) -> list[patterns.Candidate]:
        region = result.region_id
        out: list[patterns.Candidate] = []
        positivity = self.t.positivity
        partition, offset = msg.partition, msg.offset
        total_key = f"{region}|{day}"
        counted = patterns.count_once(msg.get(positivity, total_key), partition, offset)
        if counted is not None:
            msg.put(positivity, total_key, counted)

        def totals(d: int) -> int:
            return int((msg.get(positivity, f"{region}|{d}") or {"n": 0})["n"])

        for f in found:
            if not f.recognized or f.risk < substances.HIGH_RISK:
                continue
            key = f"{region}|{f.key}"
            # A cluster is the same adulterant at several sites (fentanyl in down samples
            # is the supply, not a cluster): only results where the sold-as does not
            # explain the substance count.
            if rules.is_unexpected(result, substances.get_substance(f.key)):
                candidate, value = patterns.cluster(result, at, f, cfg,
                                                    msg.get(self.t.clusters, key))
                if value is not None:
                    msg.put(self.t.clusters, key, value)
                if candidate:
                    out.append(candidate)
            pos_key = f"{region}|{f.key}|{day}"
            counted = patterns.count_once(msg.get(positivity, pos_key), partition, offset)
            if counted is not None:
                msg.put(positivity, pos_key, counted)

            def positives(d: int, sub: str = f.key) -> int:
                return int((msg.get(positivity, f"{region}|{sub}|{d}") or {"n": 0})["n"])

            rising = patterns.rising_positivity(f, day, cfg, positives, totals, result.event_id)
            if rising:
                out.append(rising)
        return out

    async def _send_canary(self, result: DrugCheckResultV1) -> None:
        """A canary (`lookout smoke`) raises its unexpected-adulterant signals every time,
        with ids derived from its own event id, and leaves every table untouched."""
        for signal in rules.unexpected_adulterants(result):
            canary = signal.model_copy(update={"canary": True})
            await self.send(canary.region_id, canary.model_dump_json())

    async def _send_contamination(self, msg: Message, result: DrugCheckResultV1,
                                  c: patterns.Candidate) -> None:
        sold_name = None
        if result.sold_as_id:
            try:
                sold_name = substances.get_substance(result.sold_as_id).name
            except KeyError:
                sold_name = None

        def build(event_id: uuid.UUID) -> str:
            return ContaminationSignalV1(
                event_id=event_id, producer=PRODUCER, pattern=c.pattern,
                region_id=result.region_id, region_name=result.region_name,
                severity=c.severity, occurred_at=result.collected_at,
                evidence_event_ids=list(c.evidence), substance_id=c.substance.key[:80],
                substance_name=c.substance.name, sold_as_id=result.sold_as_id,
                sold_as_name=sold_name or result.sold_as_raw, site_count=c.site_count,
                sample_count=c.sample_count,
                identified_by=sorted({d.method for d in result.substances
                                      if d.substance_id == c.substance.key}),
            ).model_dump_json()

        await self._gate(msg, result.region_id, c.pattern, c.substance.key, c.severity,
                         result.collected_at.timestamp(), result.collected_at.isoformat(),
                         str(result.event_id), build, "contamination")

    # ------------------------------------------------------------------ the gate

    async def _gate(self, msg: Message, region: str, pattern: str, substance: str,
                    severity: Severity,
                    at: float, window: str, trigger: str, build: Callable[[uuid.UUID], str],
                    kind: str) -> None:
        key = episodes.episode_key(region, pattern, substance)
        state = msg.get(self.t.episodes, key)
        decision = episodes.decide(state, key, severity=severity, at=at, window=window,
                                   trigger=trigger, cooldown=self.config.cooldown_seconds)
        if decision.action == "suppress":
            SUPPRESSED.labels(kind, pattern).inc()
            return
        if decision.action == "replay":
            assert decision.payload is not None
            payload = decision.payload
        else:
            assert decision.event_id is not None
            payload = build(decision.event_id)
            msg.put(self.t.episodes, key, episodes.record(
                state, decision, severity=severity, at=at, trigger=trigger, payload=payload))
        SIGNALS.labels(kind, pattern).inc()
        log.info("signal %s %s %s in %s (%s)", kind, pattern, substance, region, severity)
        await self.send(region, payload)
