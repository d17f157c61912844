"""Apply an environment: render → plan → apply phase by phase → prune → rollout waits.

Each stage is a small function of the previous one's result, so `up` (and tests) can call
`apply_objects` with their own connection and objects, and the CLI only renders progress.

Order of the inventory writes matters for a run killed half-way: the ApplySet parent is widened
to the old plus the new kinds/namespaces before any member is applied and narrowed only after pruning, so the
next run still finds every member it may have to prune.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfdeploy.plan.diff import DiffResult, object_diff
from kfdeploy.plan.phases import CRD, Phase, Plan, Scope, Step, WaitSpec, build_plan
from kfdeploy.plan.prune import LiveRef, Protections, PrunePlan, prune_plan
from kfdeploy.render.objects import ObjectKey, RenderedObject

if TYPE_CHECKING:  # the adapter imports `kubernetes`; load it only when a cluster is used
    from kfdeploy.cluster.apply import Outcome
    from kfdeploy.cluster.client import Kube
    from kfdeploy.cluster.inventory import ApplySet
    from kfdeploy.config.model import Environment

log = logging.getLogger(__name__)

ACTIONS = ("created", "configured", "unchanged", "pruned", "failed", "conflict", "pending")


@dataclass
class ApplyOptions:
    dry_run: bool = False
    prune: bool = True
    force_conflicts: bool = False
    timeout: float = 600.0  # per wait
    workers: int = 8
    protections: Protections = field(default_factory=Protections)
    skip_unchanged: bool = True


@dataclass
class ProgressEvent:
    """What the CLI shows: a step started/finished, an object done, a wait's progress."""

    kind: str  # step-start | object | wait | step-done | prune-start
    title: str
    total: int = 0
    done: int = 0
    outcome: Outcome | None = None
    counts: dict[str, int] = field(default_factory=dict)  # step-done: objects per action


Progress = Callable[[ProgressEvent], None]


@dataclass
class ApplySummary:
    outcomes: list[Outcome] = field(default_factory=list)
    prune: PrunePlan = field(default_factory=PrunePlan)
    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retried: list[str] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)  # (step title, seconds)
    seconds: float = 0.0
    dry_run: bool = False
    plan: Plan | None = None

    def by_component(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            out.setdefault(o.component or "-", Counter())[o.action] += 1
        return out

    def totals(self) -> Counter[str]:
        return Counter(o.action for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in ("failed", "conflict")]


# ---- which cluster ----------------------------------------------------------------------------


def resolve_kubeconfig(env: Environment, override: Path | None) -> Path:
    """The kubeconfig for `env` (see workflows.up.known_kubeconfig), else a fresh one from the
    cloud provider."""
    from kfdeploy.workflows.up import known_kubeconfig, kubeconfig_path

    known = known_kubeconfig(env, override)
    if known is not None:
        return known
    from kfdeploy.cloud.provider import get_provider

    return get_provider(env).kubeconfig(env, kubeconfig_path(env))


# ---- apply ------------------------------------------------------------------------------------


def apply_objects(
    kube: Kube,
    objects: Sequence[RenderedObject],
    applyset: ApplySet,
    *,
    options: ApplyOptions | None = None,
    progress: Progress | None = None,
) -> ApplySummary:
    """Apply `objects` in phases, prune what the ApplySet no longer needs, wait for rollouts.

    Raises ApplyFailed (after recording outcomes) when a step has failures: later phases depend
    on earlier ones, so going on would only add confusing errors.
    """
    from kfdeploy.cluster.apply import Applier, raise_for_failures
    from kfdeploy.cluster.apply import ApplyOptions as AdapterOptions

    options = options or ApplyOptions()
    emit = progress or (lambda _e: None)
    started = time.monotonic()
    scope = Scope(objects)
    plan = build_plan(objects, scope)
    summary = ApplySummary(dry_run=options.dry_run, plan=plan)
    desired_keys = {scope.key(o) for o in objects}
    new_gks = {(o.group, o.kind) for o in objects}
    new_nss = {k.namespace for k in desired_keys if k.namespace}

    try:
        parent = applyset.read(kube)
        old_gks = set(parent.group_kinds) if parent else set()
        old_nss = set(parent.namespaces) if parent else set()
        state = parent
        if not options.dry_run:
            state = applyset.ensure(kube, state, old_gks | new_gks, old_nss | new_nss)

        def on_object(o: Outcome) -> None:
            emit(ProgressEvent("object", "", outcome=o))

        applier = Applier(
            kube,
            applyset,
            scope,
            AdapterOptions(
                force_conflicts=options.force_conflicts,
                dry_run=options.dry_run,
                workers=options.workers,
                skip_unchanged=options.skip_unchanged,
            ),
            on_object=on_object,
        )
        for step in plan.steps:
            if step.phase == Phase.ROLLOUT:
                continue
            title = _step_title(step)
            step_started = time.monotonic()
            emit(ProgressEvent("step-start", title, total=len(step.objects)))
            if not options.dry_run:
                for wait in step.gate:
                    _run_wait(kube, wait, step, objects, applyset, options, emit)
                if step.gate:
                    kube.discovery.invalidate()  # new kinds: resolve them afresh
            outcomes = applier.apply(step.objects)
            summary.outcomes += outcomes
            raise_for_failures(outcomes, title)
            if not options.dry_run:
                for wait in step.waits:
                    _run_wait(kube, wait, step, objects, applyset, options, emit)
            summary.steps.append((title, time.monotonic() - step_started))
            emit(
                ProgressEvent(
                    "step-done",
                    title,
                    total=len(step.objects),
                    counts=dict(Counter(o.action for o in outcomes)),
                )
            )

        if parent is not None and (options.prune or options.dry_run):
            step_started = time.monotonic()
            emit(ProgressEvent("prune-start", "prune"))
            summary.prune = compute_prune(
                kube, applier.members(old_gks | new_gks), desired_keys, options.protections
            )
            if options.prune and not options.dry_run:
                from kfdeploy.cluster.prune import execute

                pruned = execute(
                    kube,
                    summary.prune,
                    workers=options.workers,
                    timeout=options.timeout,
                    on_object=on_object,
                )
                summary.outcomes += pruned
                emit(
                    ProgressEvent(
                        "step-done",
                        "prune",
                        total=len(pruned),
                        counts=dict(Counter(o.action for o in pruned)),
                    )
                )
                summary.steps.append(("prune", time.monotonic() - step_started))
                raise_for_failures(pruned, "prune")
            elif options.dry_run:
                from kfdeploy.cluster.apply import Outcome as Out

                summary.outcomes += [
                    Out(r.key, r.component, "pruned", "would be pruned")
                    for r in summary.prune.delete
                ]
        if not options.dry_run:
            # Narrow the parent: kinds and namespaces of what is now in the set (protected
            # leftovers stay members, so they are reported again until explicitly pruned).
            kept = [r for r, _ in summary.prune.kept] if options.prune else []
            if not options.prune and parent is not None:
                kept_gks, kept_nss = old_gks, old_nss  # nothing pruned: nothing may be forgotten
            else:
                kept_gks = {(r.key.group, r.key.kind) for r in kept}
                kept_nss = {r.key.namespace for r in kept if r.key.namespace}
            applyset.ensure(kube, state, new_gks | kept_gks, new_nss | kept_nss)
            rollout = next(s for s in plan.steps if s.phase == Phase.ROLLOUT)
            step_started = time.monotonic()
            emit(ProgressEvent("step-start", _step_title(rollout)))
            for wait in rollout.gate + rollout.waits:
                _run_wait(kube, wait, rollout, objects, applyset, options, emit)
            summary.steps.append((_step_title(rollout), time.monotonic() - step_started))
            emit(ProgressEvent("step-done", _step_title(rollout)))
    finally:
        summary.requests = Counter(kube.stats.by_method)
        summary.retries = kube.stats.retries
        summary.retried = list(kube.stats.retried)
        summary.seconds = time.monotonic() - started
    return summary


def _step_title(step: Step) -> str:
    return f"{int(step.phase)}. {step.phase.title}" + (f" ({step.note})" if step.note else "")


def _run_wait(
    kube: Kube,
    wait: WaitSpec,
    step: Step,
    objects: Sequence[RenderedObject],
    applyset: ApplySet,
    options: ApplyOptions,
    emit: Progress,
) -> None:
    from kfdeploy.cluster import waits

    title = f"{_step_title(step)}: {wait.kind}"

    def prog(done: int, total: int) -> None:
        emit(ProgressEvent("wait", title, total=total, done=done))

    if wait.kind == "crds-established":
        keys = set(wait.keys)
        crds = [o for o in objects if (o.group, o.kind) == CRD and o.key in keys]
        kinds = [(str(o.obj["spec"]["group"]), str(o.obj["spec"]["names"]["kind"])) for o in crds]
        waits.wait_crds_established(
            kube, [o.key for o in crds], kinds, timeout=options.timeout, progress=prog
        )
    elif wait.kind == "workloads-ready":
        waits.wait_workloads(
            kube, list(wait.keys), timeout=options.timeout, applyset_id=applyset.id, progress=prog
        )
    elif wait.kind == "endpoints-ready":
        keys = set(wait.keys)
        scope = Scope(objects)
        hooks = [o for o in objects if scope.key(o) in keys]
        waits.wait_endpoints(kube, hooks, timeout=options.timeout, progress=prog)
    elif wait.kind == "ca-injected":
        waits.wait_ca_injected(kube, list(wait.keys), timeout=options.timeout, progress=prog)
    else:  # a plan this module does not understand is a bug, not a user error
        raise AssertionError(f"unknown wait {wait.kind}")


def compute_prune(
    kube: Kube,
    members: Sequence[LiveRef],
    desired: set[ObjectKey],
    protections: Protections,
) -> PrunePlan:
    """The members of the ApplySet the render no longer has, with protections applied."""
    from kfdeploy.cluster.prune import crds_in_use

    gone_crds = [
        r.key.name for r in members if (r.key.group, r.key.kind) == CRD and r.key not in desired
    ]
    in_use = crds_in_use(kube, gone_crds) if gone_crds else set()
    return prune_plan(members, desired, protections=protections, crds_in_use=in_use)


# ---- diff -------------------------------------------------------------------------------------


def diff_objects(
    kube: Kube,
    objects: Sequence[RenderedObject],
    applyset: ApplySet,
    *,
    protections: Protections | None = None,
    workers: int = 8,
) -> DiffResult:
    """Server-side dry-run of every changed object against the live one, plus the prune set."""
    from kfdeploy.cluster.apply import Applier
    from kfdeploy.cluster.apply import ApplyOptions as AdapterOptions

    scope = Scope(objects)
    applier = Applier(kube, applyset, scope, AdapterOptions(dry_run=True, workers=workers))
    result = DiffResult()
    by_key = {scope.key(o): o for o in objects}
    for step in build_plan(objects, scope).steps:
        for outcome in applier.apply(step.objects):
            if outcome.action == "unchanged":
                continue
            if outcome.action in ("pending", "failed", "conflict"):
                result.pending.append((outcome.key, f"{outcome.action}: {outcome.message}"))
                continue
            live = None
            if outcome.action == "configured":
                res = kube.discovery.require(outcome.key.group, outcome.key.kind)
                live = kube.get_or_none(res.path(outcome.key.name, outcome.key.namespace))
            d = object_diff(outcome.key, by_key[outcome.key].component, live, outcome.result)
            outcome.result = None  # dry-run answers of large CRDs add up; keep only the text
            result.objects.append(d)
    parent = applyset.read(kube)
    if parent is not None:
        gks = set(parent.group_kinds) | {(o.group, o.kind) for o in objects}
        result.prune = compute_prune(
            kube, applier.members(gks), set(by_key), protections or Protections()
        )
    return result


# ---- environment-level entry points -----------------------------------------------------------


def render_environment(env: Environment, manifests_dir: Path | None) -> list[RenderedObject]:
    from kfdeploy.render.engine import render

    return render(env, manifests_dir=manifests_dir).objects


def connect_environment(env: Environment, kubeconfig: Path | None) -> Kube:
    from kfdeploy.cluster.client import connect

    return connect(resolve_kubeconfig(env, kubeconfig), env.cluster.context)


def apply_environment(
    env: Environment,
    *,
    kubeconfig: Path | None = None,
    manifests_dir: Path | None = None,
    options: ApplyOptions | None = None,
    progress: Progress | None = None,
) -> ApplySummary:
    from kfdeploy.cluster.identity import claim, read_identity
    from kfdeploy.cluster.inventory import ApplySet
    from kfdeploy.plan.guard import check
    from kfdeploy.workflows.secrets import with_secrets

    # Which cluster first: a missing kubeconfig should fail in milliseconds, not after a render.
    kube = connect_environment(env, kubeconfig)
    # The context guard, as in `up`: never write one environment's platform to another's cluster.
    seen = read_identity(kube)
    check(env, seen)
    objects = render_environment(env, manifests_dir)
    dry_run = bool(options and options.dry_run)
    if seen.owner is None and not dry_run:
        claim(kube, env.owner)
    objects = with_secrets(kube, env, objects, dry_run=dry_run)
    return apply_objects(
        kube, objects, ApplySet.for_environment(env.name), options=options, progress=progress
    )


def diff_environment(
    env: Environment,
    *,
    kubeconfig: Path | None = None,
    manifests_dir: Path | None = None,
    protections: Protections | None = None,
) -> DiffResult:
    from kfdeploy.cluster.inventory import ApplySet

    kube = connect_environment(env, kubeconfig)
    objects = render_environment(env, manifests_dir)
    return diff_objects(kube, objects, ApplySet.for_environment(env.name), protections=protections)


def summary_rows(summary: ApplySummary) -> list[tuple[str, dict[str, int]]]:
    """(component, counts per action) rows in a stable order, for tables and JSON."""
    rows: list[tuple[str, dict[str, int]]] = []
    for comp, counts in sorted(summary.by_component().items()):
        rows.append((comp, {a: counts.get(a, 0) for a in ACTIONS}))
    return rows


def as_dict(summary: ApplySummary) -> dict[str, Any]:
    return {
        "dry_run": summary.dry_run,
        "seconds": round(summary.seconds, 2),
        "totals": dict(summary.totals()),
        "components": {c: v for c, v in summary_rows(summary)},
        "requests": dict(summary.requests),
        "retries": summary.retries,
        "retried": summary.retried,
        "steps": {t: round(sec, 2) for t, sec in summary.steps},
        "prune": [str(r) for r in summary.prune.delete],
        "kept": [f"{r}: {why}" for r, why in summary.prune.kept],
        "failed": [str(o) for o in summary.failed],
    }
