"""Table recovery that applies every changelog record it reads, up to the end the fetches report.

Faust restores a table partition by reading its changelog up to the end offset the broker lists when
recovery starts, then hands the partition to the agents; records it reads past that offset wait in a buffer
(of ``recovery_buffer_size``, 1,000) that is applied only at the next rebalance. On a broker whose listed
end offset lags the log (the embedded one lists the last batch's first offset + 1, README "The embedded
broker"), a moved partition then came back without the last records of its last batch: the cards they held
lost their latest transactions, for good unless those were delivered again. Every fetch response also carries the partition's high watermark,
so recovery here waits for the higher of the two ends: every record read is applied before the agents run.
On a broker that lists the true end the two agree and nothing changes.
"""

from __future__ import annotations

from typing import Counter

from faust.exceptions import ConsumerNotStarted
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP


class FetchedEndRecovery(Recovery):
    """Faust's recovery whose active partitions end at the highest end offset seen, listed or fetched."""

    def active_remaining(self) -> Counter[TP]:
        """Records left to apply per active changelog partition (Faust asks this after every record)."""
        for tp, highwater in self.active_highwaters.items():
            fetched = self._fetched_end(tp)
            if highwater is not None and fetched is not None and fetched - 1 > highwater:
                self.active_highwaters[tp] = fetched - 1  # Faust's highwater is the last offset, end - 1
        return super().active_remaining()

    def _fetched_end(self, tp: TP) -> int | None:
        """The partition's high watermark from the consumer's last fetch of it; None before the first one, or
        once a rebalance has taken the partition away (recovery then starts again)."""
        try:
            return self.app.consumer.highwater(tp)
        except (AssertionError, AttributeError, ConsumerNotStarted):  # not assigned (now), or no consumer yet
            return None


class FetchedEndTableManager(TableManager):
    """Faust's table manager with :class:`FetchedEndRecovery` (the app's ``TableManager`` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FetchedEndRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


__all__ = ["FetchedEndRecovery", "FetchedEndTableManager"]
