"""The seed's build and uninstall procedure as a plan and idempotent steps.

``kagemusha init`` turns the site's facts into a plan directory (:func:`parse_facts`,
:func:`render_plan`, :func:`write_plan`); ``kagemusha build`` carries out one node's part of it
(:func:`run_build`, with :func:`run_verify` for the seed's checks) and records every change in
a :class:`Manifest`; ``kagemusha uninstall`` undoes exactly that (:func:`run_uninstall`).

Usage::

    from kagemusha.procedure import BuildContext, Manifest, load_plan, run_build

    plan = load_plan("/root/plan")
    ctx = BuildContext(plan=plan, node="n1", home=Path("/var/lib/kagemusha"), etc=Path("/etc/kagemusha"),
                       manifest=Manifest.open(Path("/var/lib/kagemusha"), plan.facts.cluster, "n1"))
    for outcome in run_build(ctx):
        print(outcome.step, outcome.status, outcome.detail)
"""

from __future__ import annotations

from kagemusha.procedure._manifest import Manifest
from kagemusha.procedure._plan import (
    DEFAULT_APP,
    Facts,
    GroupPlan,
    Plan,
    Topology,
    load_plan,
    parse_facts,
    render_plan,
    write_plan,
)
from kagemusha.procedure._run import (
    ENV_CRASH_AFTER,
    Outcome,
    PreflightFailed,
    run_build,
    run_uninstall,
    run_verify,
)
from kagemusha.procedure._steps import BuildContext, Step, StepFailed, build_steps

__all__ = [
    "DEFAULT_APP",
    "ENV_CRASH_AFTER",
    "BuildContext",
    "Facts",
    "GroupPlan",
    "Manifest",
    "Outcome",
    "Plan",
    "PreflightFailed",
    "Step",
    "StepFailed",
    "Topology",
    "build_steps",
    "load_plan",
    "parse_facts",
    "render_plan",
    "run_build",
    "run_uninstall",
    "run_verify",
    "write_plan",
]
