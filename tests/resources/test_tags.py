"""Process tags never match on names alone (found by the fault campaign: a test's exec resource with no
cluster id killed every e2e cluster's start script of the same group/resource/node names)."""

from __future__ import annotations

from pathlib import Path

from kagemusha.resources import ResourceContext
from kagemusha.resources.exec import ExecParams, ExecResource


def test_an_empty_cluster_id_is_a_tag_of_its_own(tmp_path: Path) -> None:
    ctx = ResourceContext("c", "webotx1", "exec1", "n1", tmp_path)
    assert ctx.tag_env()["KAGEMUSHA_CLUSTER_ID"] == "-"
    res = ExecResource(ExecParams(start="/bin/true", stop="/bin/true"), ctx)
    assert res._tag()["KAGEMUSHA_CLUSTER_ID"] == "-", "matching without the cluster id kills other clusters' processes"
