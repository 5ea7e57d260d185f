"""The detection Faust app: topics and agents live in `agents`."""

from __future__ import annotations

from shared.faust_patches import keep_changelog_queue_on_resume
from shared.settings import get_settings
from shared.streams import make_faust_app

app = make_faust_app("detection", get_settings())
# A recovering table could miss the first messages of a changelog partition when faust
# clears its changelog queue on resume (seen on Tansu at every restart of some brokers).
keep_changelog_queue_on_resume(app)
# The tables are in memory: a worker taking a partition over reads its changelog from the
# start whatever it held, so standby copies would only cost every worker the others' writes.
app.conf.table_standby_replicas = 0
# The agents hold messages unacknowledged and need each partition's messages as one
# unbroken run of offsets (services/detection/offsets.py, shared/faust_patches.py 7-9).
app.contiguous_offsets = True  # type: ignore[attr-defined]
