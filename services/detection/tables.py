"""The detection worker's tables, as the processors see them (table-like mappings: Faust
tables in the worker, plain dicts in unit tests).

Tables (keys are strings):
- spike_counts  "<area>" -> {"b": newest bucket start, "f": first, "c": {bucket start: count},
                "o": {partition: last offset counted}}: one value (one changelog write) per
                report, buckets older than a late report can need are dropped
- marks         "c|<region>" -> {"b": newest day}
- episodes      "<region>|<pattern>|<substance>" -> open episode (see `episodes`)
- spike_episodes "<area>|spike|overdose" -> the same for spikes (a table of the reports'
                partitions, as the other tables are of the results' partitions)
- seen          "<region>|<substance>", "*|<substance>" -> {"t": last seen, "e": trigger};
                with a novelty stage (`forward`), "*|<partition>|<substance>": seen in that
                source partition (the novelty stage decides "never seen anywhere")
- clusters      "<region>|<substance>" -> {"r": [[time, site, event id], ...]}
- positivity    "<region>|<day>", "<region>|<substance>|<day>" -> {"n", "o"} day counters
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tables:
    spike_counts: MutableMapping[str, Any]
    marks: MutableMapping[str, Any]
    episodes: MutableMapping[str, Any]
    seen: MutableMapping[str, Any]
    clusters: MutableMapping[str, Any]
    positivity: MutableMapping[str, Any]
    spike_episodes: MutableMapping[str, Any] = field(default_factory=dict)

    @classmethod
    def in_memory(cls) -> Tables:
        return cls({}, {}, {}, {}, {}, {}, {})

    def _all(self) -> tuple[MutableMapping[str, Any], ...]:
        return (self.spike_counts, self.marks, self.episodes, self.seen, self.clusters,
                self.positivity, self.spike_episodes)

    def flush(self, tables: tuple[MutableMapping[str, Any], ...] | None = None) -> None:
        """Write the held changes of write-behind tables (see `tablecache.WriteBehind`)."""
        for table in self._all() if tables is None else tables:
            flush = getattr(table, "flush", None)
            if flush is not None:
                flush()

    def of_reports(self) -> tuple[MutableMapping[str, Any], ...]:
        return (self.spike_counts, self.spike_episodes)

    def of_results(self) -> tuple[MutableMapping[str, Any], ...]:
        return (self.marks, self.episodes, self.seen, self.clusters, self.positivity)

    def forget(self, tables: tuple[MutableMapping[str, Any], ...] | None = None) -> None:
        """Drop read caches and held writes (see `tablecache.WriteBehind.forget`)."""
        for table in self._all() if tables is None else tables:
            forget = getattr(table, "forget", None)
            if forget is not None:
                forget()
