"""The stream processors' logic over table-like mappings (Faust tables in the worker, plain
dicts in unit tests). Event time drives everything; every table write is idempotent for a
redelivered message (offset watermarks per source partition, or trigger ids), and every
read sees the table as it was before the message (`asof`: each value keeps an undo log of
the uncommitted messages that wrote it), so a message delivered again after a crash raises
exactly the signals it raised the first time, however far the recovered tables ran ahead.

The tables and their keys: `tables`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from services.detection import episodes, patterns, rules, spikes
from services.detection.asof import Message
from services.detection.config import DetectionConfig, RegionConfig
from services.detection.metrics import LATE_EVENTS, SIGNALS, SUPPRESSED
from services.detection.tables import Tables
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
# (substance key, candidate) -> to the novelty stage (`novelty.Candidate.to_json`)
Forward = Callable[[str, dict[str, Any]], Awaitable[None]]
FORWARDED = "forwarded"  # an episode trigger whose signal the novelty stage sends


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
    def __init__(self, config: DetectionConfig, tables: Tables, send: Send,
                 forward: Forward | None = None) -> None:
        self.config = config
        self.t = tables
        self.send = send
        # None: this processor sees every source partition and decides "never seen
        # anywhere" itself; else that decision is the novelty stage's (`novelty`)
        self.forward = forward
        self._thresholds: dict[tuple[str, int], tuple[int, int | None]] = {}
        self._versions: dict[str, int] = {}  # bumped when a past bucket of an area changes
        # committed offset per source partition (undo entries below it are dropped)
        self.committed_reports: Mapping[int, int | None] = {}
        self.committed_results: Mapping[int, int | None] = {}

    def forget(self) -> None:
        """After a rebalance: drop every cache of what other workers may have changed."""
        self._thresholds.clear()
        self._versions.clear()
        self.t.forget()

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
                         _utc(bucket).isoformat(), str(report.event_id), build, "spike",
                         self.t.spike_episodes)

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
        deferred: list[tuple[patterns.Candidate, patterns.Candidate]] = []
        for f in found:
            key = f"{region}|{f.key}"
            anywhere_key = f"*|{f.key}" if self.forward is None else f"*|{partition}|{f.key}"
            in_region, anywhere = msg.get(seen, key), msg.get(seen, anywhere_key)
            candidate, new_region, new_anywhere = patterns.novel(
                result, at, f, cfg, in_region, anywhere)
            if new_region is not None:
                msg.put(seen, key, new_region)
            if new_anywhere is not None:
                msg.put(seen, anywhere_key, new_anywhere)
            if candidate and self.forward is not None and in_region is None \
                    and (anywhere is None or anywhere.get("e") == str(result.event_id)):
                # New to this partition: whether it is new anywhere is the novelty stage's
                # to decide, when that changes the signal.
                other, _, _ = patterns.novel(result, at, f, cfg, None,
                                             {"t": at, "e": None})
                if other and other.severity != candidate.severity:
                    deferred.append((candidate, other))
                    continue
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
        for first, other in deferred:
            await self._defer_novel(msg, result, first, other)

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

    def _builder(self, result: DrugCheckResultV1, c: patterns.Candidate
                 ) -> Callable[[uuid.UUID], str]:
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

        return build

    async def _send_contamination(self, msg: Message, result: DrugCheckResultV1,
                                  c: patterns.Candidate) -> None:
        await self._gate(msg, result.region_id, c.pattern, c.substance.key, c.severity,
                         result.collected_at.timestamp(), result.collected_at.isoformat(),
                         str(result.event_id), self._builder(result, c), "contamination")

    async def _defer_novel(self, msg: Message, result: DrugCheckResultV1,
                           first: patterns.Candidate, other: patterns.Candidate) -> None:
        """A substance new to the region and to this source partition, whose signal depends
        on whether it is new anywhere (`first`) or not (`other`): the episode opens here
        (with `other`'s severity: within it, no later candidate of this region and
        substance can tell the two apart), and both signals go to the novelty stage, which
        sends one. A redelivered trigger forwards them again."""
        region, sub = result.region_id, first.substance.key
        key = episodes.episode_key(region, first.pattern, sub)
        state = msg.get(self.t.episodes, key)
        at, window, trigger = (result.collected_at.timestamp(),
                               result.collected_at.isoformat(), str(result.event_id))
        replay = state is not None and state["triggers"].get(trigger) == FORWARDED
        if state is not None and not replay:
            # an episode of this region and substance already: not new anywhere
            await self._send_contamination(msg, result, other)
            return
        payloads = {}
        for c in (first, other):
            payloads[c.severity] = self._builder(result, c)(
                episodes.signal_id(key, window, c.severity))
        if not replay:
            decision = episodes.Decision("open", window, episodes.signal_id(
                key, window, other.severity))
            msg.put(self.t.episodes, key, episodes.record(
                None, decision, severity=other.severity, at=at, trigger=trigger,
                payload=FORWARDED))
        assert self.forward is not None
        await self.forward(sub, {
            "t": at, "id": trigger, "p": msg.partition, "o": msg.offset, "region": region,
            "first": payloads[first.severity], "other": payloads[other.severity]})

    # ------------------------------------------------------------------ the gate

    async def _gate(self, msg: Message, region: str, pattern: str, substance: str,
                    severity: Severity,
                    at: float, window: str, trigger: str, build: Callable[[uuid.UUID], str],
                    kind: str, table: MutableMapping[str, Any] | None = None) -> None:
        table = self.t.episodes if table is None else table
        key = episodes.episode_key(region, pattern, substance)
        state = msg.get(table, key)
        decision = episodes.decide(state, key, severity=severity, at=at, window=window,
                                   trigger=trigger, cooldown=self.config.cooldown_seconds)
        if decision.action == "suppress":
            SUPPRESSED.labels(kind, pattern).inc()
            return
        if decision.action == "replay":
            assert decision.payload is not None
            if decision.payload == FORWARDED:
                return  # the novelty stage sends this one (`_defer_novel`)
            payload = decision.payload
        else:
            assert decision.event_id is not None
            payload = build(decision.event_id)
            msg.put(table, key, episodes.record(
                state, decision, severity=severity, at=at, trigger=trigger, payload=payload))
        SIGNALS.labels(kind, pattern).inc()
        log.info("signal %s %s %s in %s (%s)", kind, pattern, substance, region, severity)
        await self.send(region, payload)
