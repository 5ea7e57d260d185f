"""How fast can one process consume a topic before doing any work? Faust against aiokafka.

    .venv/bin/python -m benchmarks.detection.faust_ceiling            # 60,000 messages a run
    .venv/bin/python -m benchmarks.detection.faust_ceiling --quick    # 20,000
    .venv/bin/python -m benchmarks.detection.faust_ceiling --quick --only faust-agent,faust-table

The ceiling under the detection worker's throughput targets (issue #4: 5,000 overdose
reports/s through one worker). On one fresh Tansu broker, for each consumer below, a new
topic (`LOOKOUT_KAFKA_PARTITIONS`, 4) gets N messages of 300 bytes keyed over 200 keys (as
the relay keys by region), published before the consumer starts; the consumer then
reads them all, doing nothing with them, in a process of its own, and reports messages/s
and its CPU time per
message (the figure that moves least with the machine's load):

- `faust-agent`: a Faust agent on the topic iterating `stream.events()` (how the detection
  agents read), on uvloop, with the app settings of every Lookout worker
  (`shared.streams.make_faust_app`);
- `faust-table`: the `faust-agent` agent writing one table key per message (a small dict
  under the message's key, as a detection table write: one changelog message each);
- `faust-send`: the `faust-agent` agent sending each message on to another topic (as a
  signal is sent);
- `faust-take`: the same agent reading `stream.take(1000, within=0.05)` batches;
- `faust-channel`: no stream at all: a task draining the topic channel's queue in batches
  of up to 5,000 and acknowledging each event (what is left of Faust's per-message path
  is its consumer thread, fetcher and conductor);
- `aiokafka`: a plain `AIOKafkaConsumer.getmany` loop (what Faust's consumer wraps).

Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.broker import free_port, start_tansu
from shared.kafka import wait_for_broker
from shared.settings import get_settings

RESULTS = Path(__file__).resolve().parents[1] / "results"
CONSUMERS = ["faust-agent", "faust-table", "faust-send", "faust-take", "faust-channel",
             "aiokafka"]
LINE = re.compile(r"consumed (\d+) in ([\d.]+) s, cpu ([\d.]+) s")


def _report(n: int, started: float, cpu_started: float) -> None:
    """The consumer's one line (on stderr: a Faust worker takes stdout over)."""
    print(f"consumed {n} in {time.perf_counter() - started:.6f} s, "
          f"cpu {time.process_time() - cpu_started:.6f} s", file=sys.stderr, flush=True)


def faust_consumer(kind: str, bootstrap: str, topic_name: str, n: int, var_dir: str) -> None:
    """Runs in the consumer process: a Faust worker that reads `n` messages and exits."""
    import mode.loop

    mode.loop.use("uvloop")
    from shared.settings import Settings
    from shared.streams import make_faust_app

    app = make_faust_app(f"ceiling-{topic_name}",
                         Settings(kafka_bootstrap=bootstrap, var_dir=var_dir))
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw",
                      partitions=app.conf.topic_partitions)
    clock: dict[str, float] = {}
    count = 0

    def seen(k: int) -> None:
        nonlocal count
        if not clock:
            clock.update(wall=time.perf_counter(), cpu=time.process_time())
        count += k
        if count >= n:
            _report(count, clock["wall"], clock["cpu"])
            os._exit(0)

    if kind == "faust-agent":
        @app.agent(topic)
        async def agent(stream: Any) -> None:
            async for _event in stream.events():
                seen(1)
    elif kind == "faust-table":
        table = app.Table("ceiling", partitions=app.conf.topic_partitions, key_type=str)

        @app.agent(topic)
        async def agent_table(stream: Any) -> None:
            i = 0
            async for event in stream.events():
                i += 1
                table[bytes(event.message.key).decode()] = {"n": i, "b": 1764547200}
                seen(1)
    elif kind == "faust-send":
        sink = app.topic(f"{topic_name}.sink", value_serializer="raw", key_serializer="raw",
                         partitions=app.conf.topic_partitions)

        @app.agent(topic)
        async def agent_send(stream: Any) -> None:
            async for event in stream.events():
                await sink.send(key=event.message.key, value=event.value)
                seen(1)
    elif kind == "faust-take":
        @app.agent(topic)
        async def agent_take(stream: Any) -> None:
            async for values in stream.take(1000, within=0.05):
                seen(len(values))
    else:
        channel = topic.__aiter__()  # registers the channel with the conductor

        @app.task
        async def drain() -> None:
            queue = channel.queue
            while True:
                batch = [await queue.get()]
                while len(batch) < 5000:
                    try:
                        batch.append(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                for event in batch:
                    event.ack()
                seen(len(batch))

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


async def aiokafka_consumer(bootstrap: str, topic: str, n: int) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"ceiling-{topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    try:
        count, started, cpu = 0, 0.0, 0.0
        while count < n:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batches.values():
                if not started:
                    started, cpu = time.perf_counter(), time.process_time()
                count += len(records)
        _report(count, started, cpu)
    finally:
        await consumer.stop()


async def publish(bootstrap: str, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, get_settings().kafka_partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        value = b"x" * 300
        for start in range(0, n, 5000):
            sent = [await producer.send(topic, value=value, key=f"k{i % 200}".encode())
                    for i in range(start, min(n, start + 5000))]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def run_consumer(kind: str, bootstrap: str, topic: str, n: int, var_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.detection.faust_ceiling", "--consume", kind,
           "--bootstrap", bootstrap, "--topic", topic, "--messages", str(n),
           "--var-dir", str(var_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    found = LINE.search(done.stderr)
    if found is None:
        raise RuntimeError(f"{kind}: no figures (exit {done.returncode}):\n{done.stderr[-3000:]}")
    count, wall, cpu = int(found.group(1)), float(found.group(2)), float(found.group(3))
    return {"consumer": kind, "messages": count, "seconds": wall,
            "per_second": count / wall, "cpu_us_per_message": cpu / count * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(CONSUMERS),
                        help="comma-separated consumers to run (default: all)")
    parser.add_argument("--consume", choices=CONSUMERS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--var-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume == "aiokafka":
        asyncio.run(aiokafka_consumer(args.bootstrap, args.topic, args.messages))
        return 0
    if args.consume:
        faust_consumer(args.consume, args.bootstrap, args.topic, args.messages, args.var_dir)
        return 0

    n = 20_000 if args.quick else 60_000
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-ceiling-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_tansu("127.0.0.1", port, tmp / "tansu.log")
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "machine": platform.machine(),
                              "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                              "messages": n, "message_bytes": 300, "runs": []}
    try:
        asyncio.run(wait_for_broker(bootstrap, 30))
        for kind in [k for k in CONSUMERS if k in args.only.split(",")]:
            topic = f"bench.ceiling.{kind}.{uuid.uuid4().hex[:6]}"
            asyncio.run(publish(bootstrap, topic, n))
            run = run_consumer(kind, bootstrap, topic, n, tmp / topic)
            report["runs"].append(run)
            print(f"{kind:14s} {run['per_second']:>9,.0f} messages/s, "
                  f"{run['cpu_us_per_message']:6.1f} us of CPU per message", flush=True)
    finally:
        broker.terminate()
        broker.wait(15)
    report["load_average_at_end"] = os.getloadavg()
    print(f"load average {report['load_average_at_start'][0]:.2f} -> "
          f"{report['load_average_at_end'][0]:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_faust_ceiling{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
