"""The detection Faust app: topics and agents live in `agents`."""

from __future__ import annotations

from shared.settings import get_settings
from shared.streams import make_faust_app

app = make_faust_app("detection", get_settings())
# faust's changelog queue is emptied when the consumer resumes after a rebalance, yet the
# read offsets of the messages it held have moved on: a recovering table can then miss the
# first messages of a changelog partition for good (seen on Tansu at every restart of some
# brokers). Recovery tells replayed changelog messages apart by offset, so nothing needs
# clearing. With several workers a rebalance revokes partitions too: the kill -9 test of
# three workers (tests/detection/test_scaling.py) runs through that.
app.tables._changelog_queue = app.FlowControlQueue(  # type: ignore[attr-defined]
    maxsize=app.conf.stream_buffer_maxsize, clear_on_resume=False)
