"""The stream processors' logic on in-memory tables: spikes, the four contamination
patterns, the cooldown gate, late events, redelivery and replay determinism."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from services.detection import spikes
from services.detection.config import RegionConfig, load_config
from services.detection.detectors import METHODS
from services.detection.metrics import LATE_EVENTS
from services.detection.processors import Processor, bucket_start
from services.detection.tablecache import WriteBehind
from services.detection.tables import Tables
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.settings import Settings
from tests.detection.helpers import KING, T0, daily_reports, every_pattern_stream, report, result


class Run:
    """A processor over fresh in-memory tables; records every signal sent."""

    def __init__(self, **settings: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.tables = Tables.in_memory()
        config = load_config(Settings(env="test", **settings))
        self.processor = Processor(config, self.tables, self._send)
        self.offset = 0

    async def _send(self, key: str, payload: str) -> None:
        self.sent.append(json.loads(payload))

    def feed(self, events: Sequence[OverdoseReportV1 | DrugCheckResultV1],
             offsets: list[int] | None = None) -> list[dict[str, Any]]:
        before = len(self.sent)

        async def go() -> None:
            for i, event in enumerate(events):
                offset = offsets[i] if offsets else self.offset
                self.offset = max(self.offset, offset) + 1
                if isinstance(event, OverdoseReportV1):
                    await self.processor.on_report(event, 0, offset)
                else:
                    await self.processor.on_result(event, 0, offset)

        asyncio.run(go())
        return self.sent[before:]


BASELINE = [1, 2, 1, 0, 1, 2, 1] * 4  # 28 quiet days, mean 8/7


def test_a_spike_after_a_quiet_month_signals_once_then_escalates_once() -> None:
    run = Run()
    assert run.feed(daily_reports(BASELINE)) == []
    spike_day = daily_reports([12], start=T0 + timedelta(days=28), first=1000)
    sent = run.feed(spike_day)
    # poisson: qpois(0.999, 8/7) = 6, so the 7th report of the day alarms (warning);
    # score (x - 8/7) / (6 - 8/7) >= 2 first at x = 11: critical. Nothing more after that.
    assert [(s["severity"], s["observed"]) for s in sent] == [("warning", 7.0),
                                                              ("critical", 11.0)]
    first = sent[0]
    assert first["kind"] == "spike" and first["method"] == "poisson"
    assert first["upperbound"] == 6.0 and first["expected"] == pytest.approx(8 / 7)
    assert first["region_id"] == KING
    assert first["window_start"].startswith("2026-01-29T00:00:00")
    assert first["evidence_event_ids"] == [str(spike_day[6].event_id)]
    assert sent[0]["event_id"] != sent[1]["event_id"]


def test_the_stream_uses_the_same_detector_as_lookout_detect() -> None:
    history = [float(v) for v in BASELINE * 2]
    for method, params in [("poisson", {}), ("ears-c1", {}), ("ears-c2", {}),
                           ("ewma", {}), ("cusum", {"baseline": 21}),
                           ("threshold", {"threshold": 4})]:
        hist = history[-spikes.history_length(method, params):]
        threshold = spikes.alarm_threshold(method, params, hist)
        assert threshold is not None, method
        for x, expect in ((threshold, True), (threshold - 1, False)):
            ev = spikes.evaluate(method, params, hist, x)
            kwargs = {k: v for k, v in params.items() if k != "baseline"} \
                if method == "cusum" else params
            start = 21 if method == "cusum" else len(hist)
            point = METHODS[method]([*hist, x], start=start, **kwargs)[-1]
            assert ev.alarm is point.alarm is expect, (method, x)
            assert ev.upperbound == point.upperbound
    # C3 alarms on the two previous buckets' C2 statistics: a quiet history never alarms,
    # two high buckets make any count above 0 alarm.
    quiet = history[-11:]
    assert spikes.alarm_threshold("ears-c3", {}, quiet) is None
    loud = [*history[-9:], 9.0, 9.0]
    assert spikes.alarm_threshold("ears-c3", {}, loud) == 1
    assert METHODS["ears-c3"]([*loud, 1.0], start=11)[-1].alarm


def test_a_redelivered_report_is_not_counted_twice_and_replays_its_signal() -> None:
    run = Run()
    events = daily_reports(BASELINE) + daily_reports([7], start=T0 + timedelta(days=28),
                                                     first=1000)
    sent = run.feed(events)
    assert len(sent) == 1
    # The last report again at its offset (a crash before the commit): same signal, and
    # the day's count stays 7.
    again = run.feed([events[-1]], offsets=[len(events) - 1])
    assert again == sent
    key = str(bucket_start((T0 + timedelta(days=28)).timestamp(), 86400))
    assert run.tables.spike_counts[KING]["c"][key] == 7


def test_an_area_keeps_only_the_buckets_a_late_report_can_still_need() -> None:
    run = Run(detection_grace_hours=48)
    run.feed(daily_reports([1] * 120))
    counts = run.tables.spike_counts[KING]["c"]
    # poisson reads 28 days before a bucket; a late report may fall 2 days back
    assert 28 + 2 <= len(counts) <= 28 + 2 + 2
    assert max(map(int, counts)) == run.tables.spike_counts[KING]["b"]


def test_replaying_the_same_input_gives_the_same_signals() -> None:
    events: list[OverdoseReportV1 | DrugCheckResultV1] = []
    events += daily_reports(BASELINE) + daily_reports([15], start=T0 + timedelta(days=28),
                                                      first=1000)
    events += [result(i, T0 + timedelta(days=30, hours=i), ["cocaine", "fentanyl"], site=i % 3)
               for i in range(6)]
    first, second = Run().feed(events), Run().feed(events)
    assert first and first == second
    assert {s.get("pattern", "spike") for s in first} >= {
        "spike", "unexpected_adulterant", "novel_substance", "multi_site_cluster"}


def test_a_late_report_within_grace_counts_in_its_bucket_and_later_ones_do_not() -> None:
    run = Run(detection_grace_hours=48)
    run.feed(daily_reports([*BASELINE, 1, 1, 1]))  # newest bucket: day 30
    late_before = LATE_EVENTS.labels("spikes")._value.get()
    # Five reports for day 28 arrive late but within 48 h of day 30: counted, re-evaluated.
    late = [report(2000 + i, T0 + timedelta(days=28, hours=3)) for i in range(6)]
    sent = run.feed(late)
    assert [s["window_start"][:10] for s in sent] == ["2026-01-29"]
    assert sent[0]["observed"] == 7.0
    # Day 27 is beyond the grace period: not counted, but counted as late.
    too_late = report(3000, T0 + timedelta(days=27, hours=1))
    assert run.feed([too_late]) == []
    assert LATE_EVENTS.labels("spikes")._value.get() == late_before + 1
    key = str(bucket_start((T0 + timedelta(days=27)).timestamp(), 86400))
    assert run.tables.spike_counts[KING]["c"][key] == BASELINE[27]


def test_county_level_groups_zip_codes_and_a_new_episode_opens_after_the_cooldown() -> None:
    run = Run(detection_spike_level="county", detection_cooldown_hours=24)
    zips = ["us/wa/king-county/98104", "us/wa/king-county/98101"]
    history = daily_reports([2] * 28)
    history = [r.model_copy(update={"region_id": zips[i % 2]}) for i, r in enumerate(history)]
    run.feed(history)
    day28 = [r.model_copy(update={"region_id": zips[i % 2]})
             for i, r in enumerate(daily_reports([10], start=T0 + timedelta(days=28),
                                                 first=500))]
    day30 = daily_reports([10], start=T0 + timedelta(days=30), first=600)
    sent = run.feed(day28 + day30)
    assert {s["region_id"] for s in sent} == {"us/wa/king-county"}
    assert sent[0]["region_name"] == "King County, WA"
    # Day 28 and day 30 are two episodes (more than 24 h apart): one warning each.
    assert [(s["window_start"][:10], s["severity"]) for s in sent if
            s["severity"] == "warning"] == [("2026-01-29", "warning"), ("2026-01-31", "warning")]


def test_per_region_method_override() -> None:
    overrides = {"us/wa": {"method": "threshold", "params": {"threshold": 3}}}
    run = Run(detection_regions_json=overrides)
    sent = run.feed(daily_reports([4]))
    assert [(s["method"], s["observed"]) for s in sent] == [("threshold", 4.0)]
    assert run.processor.config.for_region("us/or/multnomah-county/97201") == RegionConfig()


def test_bad_region_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown detection setting"):
        load_config(Settings(env="test", detection_regions_json={"us": {"nope": 1}}))
    with pytest.raises(ValueError, match="needs LOOKOUT_DETECTION_SPIKE_BUCKET=week"):
        load_config(Settings(env="test", detection_spike_method="farrington-flexible"))


# ------------------------------------------------------------------ contamination


def patterns_of(sent: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(s["pattern"], s["substance_id"], s["severity"]) for s in sent]


def test_novel_substances_first_anywhere_first_in_region_and_unrecognized() -> None:
    run = Run()
    seattle = run.feed([result(1, T0, ["heroin"], sold_as="heroin")])
    assert patterns_of(seattle) == [("novel_substance", "heroin", "critical")]
    other = "us/or/multnomah-county/97201"
    portland = run.feed([result(2, T0 + timedelta(days=1), ["heroin"], region_id=other,
                                sold_as="heroin")])
    assert patterns_of(portland) == [("novel_substance", "heroin", "warning")]
    # Seen in Seattle within 90 days: nothing; after 91 days: novel again.
    assert run.feed([result(3, T0 + timedelta(days=60), ["heroin"], sold_as="heroin")]) == []
    again = run.feed([result(4, T0 + timedelta(days=151), ["heroin"], sold_as="heroin")])
    assert patterns_of(again) == [("novel_substance", "heroin", "warning")]
    odd = run.feed([result(5, T0 + timedelta(days=152), [], raw=["Zylo-X 9"])])
    assert patterns_of(odd) == [("novel_substance", "unrecognized:zylox9", "warning")]
    assert odd[0]["substance_name"] == "Zylo-X 9"
    assert run.feed([result(6, T0 + timedelta(days=153), ["caffeine"])]) == []  # a cut


def test_multi_site_cluster_needs_k_results_from_m_sites_within_t_hours() -> None:
    run = Run()
    run.feed([result(0, T0 - timedelta(days=10), ["heroin", "xylazine"],
                     sold_as="heroin")])  # novelty done
    base = T0 + timedelta(days=1)
    one_site = [result(i, base + timedelta(hours=i), ["heroin", "xylazine"], sold_as="heroin",
                       site=1) for i in range(1, 4)]
    assert [p for p in patterns_of(run.feed(one_site)) if p[0] == "multi_site_cluster"] == []
    far = run.feed([result(9, base + timedelta(hours=80), ["heroin", "xylazine"],
                           sold_as="heroin", site=2)])
    assert [p for p in patterns_of(far) if p[0] == "multi_site_cluster"] == []
    near = run.feed([result(10, base + timedelta(hours=81), ["heroin", "xylazine"],
                            sold_as="heroin", site=3),
                     result(11, base + timedelta(hours=82), ["heroin", "xylazine"],
                            sold_as="heroin", site=2)])
    clusters = [s for s in near if s["pattern"] == "multi_site_cluster"]
    # Xylazine in heroin is an adulterant; heroin in heroin is the supply: no heroin cluster.
    assert [(s["substance_id"], s["site_count"], s["sample_count"]) for s in clusters] == [
        ("xylazine", 2, 3)]


def test_rising_positivity_above_the_baseline() -> None:
    run = Run()
    events = []
    n = 0
    for day in range(35):
        share = 1 if day < 28 else 5  # fentanyl in 1 of 10 samples, then 5 of 10
        for i in range(10):
            found = ["cocaine", "fentanyl"] if i < share else ["cocaine"]
            events.append(result(n, T0 + timedelta(days=day, hours=i), found, site=i % 4))
            n += 1
    sent = run.feed(events)
    rising = [s for s in sent if s["pattern"] == "rising_positivity"]
    assert rising and {s["substance_id"] for s in rising} == {"fentanyl"}
    assert rising[0]["occurred_at"][:10] >= "2026-01-29"  # only once the share rose
    # Fentanyl in cocaine on each of the 35 days: one signal a day (24 h cooldown), not 63.
    assert [p[0] for p in patterns_of(sent)].count("unexpected_adulterant") == 35


def test_contamination_thresholds_per_region() -> None:
    strict = {"us/wa/king-county": {"cluster_k": 2, "cluster_m": 2}}
    run = Run(detection_regions_json=strict)
    run.feed([result(0, T0, ["heroin", "xylazine"], sold_as="heroin")])
    sent = run.feed([result(1, T0 + timedelta(hours=1), ["heroin", "xylazine"],
                            sold_as="heroin", site=1)])
    assert [p for p in patterns_of(sent) if p[0] == "multi_site_cluster"] == [
        ("multi_site_cluster", "xylazine", "warning")]


def test_write_behind_tables_hold_writes_until_flush_and_give_the_same_signals() -> None:
    backing: dict[str, Any] = {}
    cached = WriteBehind(backing)
    cached["a"] = {"n": 1}
    assert cached.get("a") == {"n": 1} and "a" not in backing
    cached.flush()
    assert backing == {"a": {"n": 1}}
    backing["a"] = {"n": 2}  # another worker's write, while it owned the partition
    cached["b"] = {"n": 3}
    cached.forget()  # a rebalance: the read cache goes, and so does a held write (its
    # message was not acknowledged: it is delivered again)
    assert cached.get("a") == {"n": 2} and cached.get("b") is None
    cached.flush()
    assert "b" not in backing
    # Each held write is flushed under the message that made it (its changelog partition).
    owners: list[str] = []
    current = {"event": "m1"}
    owned = WriteBehind(backing, lambda: current["event"], owners.append)
    owned["c"] = {"n": 4}
    current["event"] = "m2"
    owned["d"] = {"n": 5}
    owned["c"] = {"n": 6}  # a later message of the batch: one write, under it
    owned.flush()
    assert owners == ["m2"] and backing["c"] == {"n": 6} and backing["d"] == {"n": 5}
    # A processor over write-behind tables, flushed after batches of events as the agents
    # do.
    events = daily_reports(BASELINE) + daily_reports([12], start=T0 + timedelta(days=28),
                                                     first=1000)
    plain = Run().feed(events)
    run = Run()
    run.tables = Tables(*(WriteBehind({}) for _ in range(7)))
    run.processor.t = run.tables
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        for offset, event in enumerate(events):
            await run.processor.on_report(event, 0, offset)
            if offset % 7 == 6:
                run.tables.flush()

    run.processor.send = lambda key, payload: _append(sent, payload)
    asyncio.run(go())
    assert sent == plain


async def _append(sent: list[dict[str, Any]], payload: str) -> None:
    sent.append(json.loads(payload))


def test_canary_results_signal_every_time_and_teach_the_detectors_nothing() -> None:
    run = Run()
    first = result(1, T0, ["cocaine", "fentanyl"]).model_copy(update={"canary": True})
    second = result(2, T0, ["cocaine", "fentanyl"]).model_copy(update={"canary": True})
    signals = run.feed([first, second])
    assert [(s["pattern"], s["substance_id"], s["canary"]) for s in signals] == [
        ("unexpected_adulterant", "fentanyl", True)] * 2
    assert signals[0]["event_id"] != signals[1]["event_id"]
    assert run.feed([first])[0]["event_id"] == signals[0]["event_id"]  # replay: same id
    assert not any((run.tables.seen, run.tables.episodes, run.tables.clusters,
                    run.tables.positivity, run.tables.marks))
    # A real result afterwards is still news: the canary did not make fentanyl "seen".
    real = run.feed([result(3, T0, ["cocaine", "fentanyl"])])
    assert {s["pattern"] for s in real} >= {"unexpected_adulterant", "novel_substance"}
    assert not any(s["canary"] for s in real)


# ------------------------------------------------------------------ exact recovery


def _data(tables: Tables) -> list[dict[str, Any]]:
    """The tables without their undo logs."""
    return [{k: {f: v for f, v in value.items() if f != "u"} for k, value in table.items()}
            for table in vars(tables).values()]


@pytest.mark.parametrize("landed", ["every key", "some keys"])
def test_messages_redelivered_after_a_crash_raise_exactly_their_first_signals(
    landed: str
) -> None:
    """A worker handles messages 0..N-1 and its tables reach the changelog, but its offsets
    were committed only up to k: after the restart, k..N-1 come again against tables that
    already hold their effects (on every key, or only on some: each key's changelog write
    lands or not). They must raise exactly the signals of an uninterrupted run, and leave
    the same counts. A short grace period makes a redelivered report look late against
    the newest bucket that later reports set."""
    import copy
    import random

    settings = {"detection_grace_hours": 1}
    events = every_pattern_stream()
    clean = Run(**settings)
    per_message = [clean.feed([e], offsets=[i]) for i, e in enumerate(events)]
    patterns_seen = {s.get("pattern", s["kind"]) for sent in per_message for s in sent}
    assert patterns_seen == {"spike", "unexpected_adulterant", "novel_substance",
                             "multi_site_cluster", "rising_positivity"}
    n = len(events)
    for k in range(n // 8, n, n // 8):
        first = Run(**settings)
        first.feed(events[:k])
        committed = copy.deepcopy(first.tables)
        first.feed(events[k:], offsets=list(range(k, n)))
        recovered = first.tables
        if landed == "some keys":
            rng = random.Random(k)
            recovered = Tables.in_memory()
            for name, table in vars(first.tables).items():
                old = getattr(committed, name)
                for key, value in table.items():
                    pick = value if rng.random() < 0.5 else old.get(key)
                    if pick is not None:
                        getattr(recovered, name)[key] = copy.deepcopy(pick)
        restarted = Run(**settings)
        restarted.tables = recovered
        restarted.processor.t = recovered
        again = restarted.feed(events[k:], offsets=list(range(k, n)))
        want = [s for sent in per_message[k:] for s in sent]
        assert again == want, f"redelivery from {k} of {n}"
        assert _data(recovered) == _data(clean.tables)
