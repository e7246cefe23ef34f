"""Prometheus metrics of one agent, read from the agent at scrape time.

A custom collector on a per-app ``CollectorRegistry`` (never the global one, so
two agents in one process, as in tests, do not collide). Cluster-wide facts
(group state and owner, nodes up) come from the agent's latest store snapshot;
counters (starts, failovers, monitor failures) are this agent's own, labelled
with ``node``, so ``sum by (group)`` over all agents gives the cluster's totals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kagemusha.control import NodeState, derive_status

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


__all__ = ["GROUP_STATES", "AgentCollector", "make_registry"]

#: Every value ``kagemusha status`` shows for a group; ``kagemusha_group_state`` has one series per value.
GROUP_STATES = ("online", "starting", "stopping", "offline", "failed")


class AgentCollector(Collector):
    """Collects the metrics of ``node`` on each scrape."""

    def __init__(self, node: NodeState) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        a = self.node
        node = a.node
        snap = a.snapshot
        stats = a.statistics()
        st = derive_status(a.config, snap, time.time())

        member = GaugeMetricFamily("kagemusha_agent_member", "1 while this agent holds its lease (is in the cluster)",
                                   labels=["node"])
        member.add_metric([node], 1.0 if stats.member else 0.0)
        yield member

        up = GaugeMetricFamily("kagemusha_node_up", "1 while the node is a cluster member (seen by this agent)",
                               labels=["node"])
        standby = GaugeMetricFamily("kagemusha_node_standby", "1 while the node is in standby (drained)", labels=["node"])
        for n in st["nodes"]:
            up.add_metric([n["name"]], 1.0 if n["state"] == "up" else 0.0)
            standby.add_metric([n["name"]], 1.0 if n.get("standby") else 0.0)
        yield up
        yield standby

        state = GaugeMetricFamily("kagemusha_group_state", "1 for the group's current state, 0 for the others",
                                  labels=["group", "state"])
        owner = GaugeMetricFamily("kagemusha_group_owner", "1 for the node that owns the group, 0 for its other nodes",
                                  labels=["group", "node"])
        for g in st["groups"]:
            for s in GROUP_STATES:
                state.add_metric([g["name"], s], 1.0 if g["state"] == s else 0.0)
            for n in a.config.group(g["name"]).nodes:
                owner.add_metric([g["name"], n], 1.0 if g["node"] == n else 0.0)
        yield state
        yield owner

        here = GaugeMetricFamily("kagemusha_group_running_here", "1 while the group runs on this node",
                                 labels=["group", "node"])
        starts = CounterMetricFamily("kagemusha_group_starts", "group starts completed on this node",
                                     labels=["group", "node"])
        failovers = CounterMetricFamily("kagemusha_group_failovers",
                                        "failovers completed on this node (starts with CLP_EVENT=FAILOVER)",
                                        labels=["group", "node"])
        restarts = CounterMetricFamily("kagemusha_group_restarts", "in-place restarts by monitor recovery on this node",
                                       labels=["group", "node"])
        last_start = GaugeMetricFamily("kagemusha_group_last_start_seconds",
                                       "how long the last start of the group on this node took", labels=["group", "node"])
        last_failover = GaugeMetricFamily("kagemusha_group_last_failover_seconds",
                                          "how long the last failover start of the group on this node took",
                                          labels=["group", "node"])
        mon_fail = CounterMetricFamily("kagemusha_monitor_failures", "failed checks of the monitor on this node",
                                       labels=["group", "monitor", "node"])
        mon_consec = GaugeMetricFamily("kagemusha_monitor_consecutive_failures",
                                       "failed checks in a row (recovery starts at the monitor's retries)",
                                       labels=["group", "monitor", "node"])
        mon_ok = GaugeMetricFamily("kagemusha_monitor_ok", "1 when the last check passed, 0 when it failed",
                                   labels=["group", "monitor", "node"])
        for gs in stats.groups:
            labels = [gs.name, node]
            here.add_metric(labels, 1.0 if gs.local == "running" else 0.0)
            starts.add_metric(labels, float(gs.starts))
            failovers.add_metric(labels, float(gs.failovers))
            restarts.add_metric(labels, float(gs.restarts))
            last_start.add_metric(labels, gs.last_start_seconds)
            last_failover.add_metric(labels, gs.last_failover_seconds)
            for ms in gs.monitors:
                mlabels = [gs.name, ms.name, node]
                mon_fail.add_metric(mlabels, float(ms.failures))
                mon_consec.add_metric(mlabels, float(ms.consecutive))
                if ms.ok is not None:
                    mon_ok.add_metric(mlabels, 1.0 if ms.ok else 0.0)
        yield from (here, starts, failovers, restarts, last_start, last_failover, mon_fail, mon_consec, mon_ok)

        renew = GaugeMetricFamily("kagemusha_lease_renew_seconds", "latency of the last lease renewal", labels=["node"])
        renew.add_metric([node], stats.lease_renew_seconds)
        store = GaugeMetricFamily("kagemusha_store_request_seconds",
                                  "latency of the last read of the cluster's keys (one per decision cycle)",
                                  labels=["node"])
        store.add_metric([node], stats.store_request_seconds)
        fences = CounterMetricFamily("kagemusha_fences", "times this agent fenced itself", labels=["node"])
        fences.add_metric([node], float(stats.fences))
        incomplete = GaugeMetricFamily("kagemusha_fence_incomplete",
                                       "1 while a fence of the group is not proven complete (the node keeps its claim)",
                                       labels=["node"])
        incomplete.add_metric([node], 1.0 if stats.fence_incomplete else 0.0)
        yield from (renew, store, fences, incomplete)


def make_registry(node: NodeState) -> CollectorRegistry:
    """A fresh registry holding only ``node``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(node))
    return registry
