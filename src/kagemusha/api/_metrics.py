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

from kagemusha.cluster import LocalState
from kagemusha.control import derive_status

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from kagemusha.agent import Agent

__all__ = ["GROUP_STATES", "AgentCollector", "make_registry"]

#: Every value ``kagemusha status`` shows for a group; ``kagemusha_group_state`` has one series per value.
GROUP_STATES = ("online", "starting", "stopping", "offline", "failed")


class AgentCollector(Collector):
    """Collects the metrics of ``agent`` on each scrape."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        node = a.node
        snap = a.snapshot
        st = derive_status(a.config, snap, time.time())

        member = GaugeMetricFamily("kagemusha_agent_member", "1 while this agent holds its lease (is in the cluster)",
                                   labels=["node"])
        member.add_metric([node], 1.0 if a.is_member() else 0.0)
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
        for name, rt in a.groups.items():
            labels = [name, node]
            here.add_metric(labels, 1.0 if rt.local == LocalState.RUNNING else 0.0)
            starts.add_metric(labels, float(rt.stats.get("starts", 0)))
            failovers.add_metric(labels, float(rt.stats.get("failovers", 0)))
            restarts.add_metric(labels, float(rt.stats.get("restarts", 0)))
            last_start.add_metric(labels, float(rt.stats.get("last_start_seconds", 0.0)))
            last_failover.add_metric(labels, float(rt.stats.get("last_failover_seconds", 0.0)))
            for ms in rt.monitors:
                mlabels = [name, ms.spec.name, node]
                mon_fail.add_metric(mlabels, float(ms.total_failures))
                mon_consec.add_metric(mlabels, float(ms.consecutive))
                if ms.last_ok is not None:
                    mon_ok.add_metric(mlabels, 1.0 if ms.last_ok else 0.0)
        yield from (here, starts, failovers, restarts, last_start, last_failover, mon_fail, mon_consec, mon_ok)

        stats = a.statistics
        renew = GaugeMetricFamily("kagemusha_lease_renew_seconds", "latency of the last lease renewal", labels=["node"])
        renew.add_metric([node], float(stats.get("lease_renew_seconds", 0.0)))
        store = GaugeMetricFamily("kagemusha_store_request_seconds",
                                  "latency of the last read of the cluster's keys (one per decision cycle)",
                                  labels=["node"])
        store.add_metric([node], float(stats.get("store_request_seconds", 0.0)))
        fences = CounterMetricFamily("kagemusha_fences", "times this agent fenced itself", labels=["node"])
        fences.add_metric([node], float(stats.get("fences", 0)))
        yield from (renew, store, fences)


def make_registry(agent: Agent) -> CollectorRegistry:
    """A fresh registry holding only ``agent``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
