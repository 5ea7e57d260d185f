"""Process-wide runtime tuning, applied by the `lookout` entry points (services/cli/) to the
process they start, never when a module is imported: a test or a tool that imports a service
keeps Python's defaults. The measurements behind each setting are in docs/performance.md."""

from __future__ import annotations

import gc
import sys


def tune_ingest_http() -> None:
    """For an ingest HTTP process, once its app is imported.

    - A short switch interval: the group-commit writer thread (shared/group_commit.py)
      lets go of the GIL for every statement and must win it back from the busy event loop;
      at the default 5 ms each wait, a group of a few statements took tens of ms, all of it
      inside the write lock every other writer waits for.
    - What exists once the app is imported (FastAPI, SQLAlchemy, the schemas, the region and
      substance catalogs) lives as long as the process: frozen out of the collector's reach,
      so its full passes, frequent while batches come in, stop walking it again and again.
    - A batch of 1,000 results keeps tens of thousands of new objects alive while it is
      validated; the young generation is collected every 100,000 net new objects instead
      of 700, so a batch no longer triggers dozens of young collections that walk the
      survivors again. Objects freed by reference counting (nearly all) do not count.
    """
    sys.setswitchinterval(0.0002)
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def tune_alerts_worker() -> None:
    """For the alerts worker (the SMS sender), once its Faust app is imported: objects made
    at start (modules, the app, settings) go to the permanent generation, and the youngest
    generation is collected every 20,000 allocations instead of 700, so the short-lived
    objects of the sends in flight stop being promoted and walked by full collections."""
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def tune_dashboard_http() -> None:
    """For a dashboard HTTP process, once its app is imported: what the import made (FastAPI,
    SQLAlchemy, scipy, the templates' machinery) goes to the permanent generation, so a full
    collection no longer walks it in the middle of a page (those were the drug supply page's
    rare stalls, several times its usual time); the youngest generation is collected every
    10,000 allocations instead of 700, so the rows and template values a page holds while it
    renders die young instead of being promoted to the old generation, which would bring the
    next full collection closer. A larger threshold makes each young collection itself a
    stall of its own."""
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
