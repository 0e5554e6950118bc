"""Consumer lag: offsets and seconds read from Kafka, judged over a window with Burrow's rules."""

from streamrec.lag.monitor import GroupReport, LagMonitor, PartitionReport, monitor_for, thresholds_for
from streamrec.lag.reader import GroupOffsets, LagReader, PartitionLag, PartitionOffsets
from streamrec.lag.status import Status, Thresholds

__all__ = [
    "GroupOffsets", "GroupReport", "LagMonitor", "LagReader", "PartitionLag", "PartitionOffsets", "PartitionReport",
    "Status", "Thresholds", "monitor_for", "thresholds_for",
]
