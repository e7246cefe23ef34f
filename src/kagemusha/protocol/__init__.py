"""The store protocol: the one home of the cluster's key layout, in both directions.

``parse_snapshot`` reads the keys into a ``Snapshot`` (and from it the typed views ``decide()``
takes); ``ClusterRecords`` writes every change. The agent, ``control`` and the API use only this.
"""

from kagemusha.protocol._layout import GroupRecords, Keys, Snapshot, parse_snapshot, root_of
from kagemusha.protocol._records import ClusterRecords

__all__ = ["ClusterRecords", "GroupRecords", "Keys", "Snapshot", "parse_snapshot", "root_of"]
