"""`kfdeploy up`: take an environment from nothing, or from any earlier state, to a verified platform.

Stages: preflight -> (cluster provisioning || render) -> kubeconfig -> context guard -> apply ->
smoke checks. Rendering runs beside provisioning because both are slow and independent. Every stage
is idempotent, and the journal lets an interrupted run resume: stages that finished in the
interrupted run, with the same inputs, are not redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfdeploy.config.model import Environment
from kfdeploy.errors import ConfigError, KfdeployError
from kfdeploy.workflows.journal import Journal, state_dir

if TYPE_CHECKING:
    from kfdeploy.checks.framework import SmokeReport
    from kfdeploy.cloud.plan import ClusterPlan
    from kfdeploy.render.engine import RenderResult
    from kfdeploy.workflows.apply import ApplySummary, ProgressEvent

log = logging.getLogger(__name__)

STAGES = ("preflight", "cluster", "render", "kubeconfig", "guard", "apply", "smoke")


@dataclass
class UpOptions:
    manifests_dir: Path | None = None
    kubeconfig: Path | None = None  # an explicit cluster instead of the provider's
    dry_run: bool = False
    prune: bool = True
    force_conflicts: bool = False
    keep_failed: bool = False
    smoke: bool = True
    timeout: float = 900.0  # per wait
    env_file: str | None = None  # the environment's file, named in errors about secret sources


@dataclass
class StageResult:
    name: str
    status: str  # done | skipped | dry-run | failed
    seconds: float
    summary: str = ""


@dataclass
class UpResult:
    env: str
    stages: list[StageResult] = field(default_factory=list)
    resumed: bool = False
    cluster_plan: ClusterPlan | None = None
    render: RenderResult | None = None
    apply: ApplySummary | None = None
    smoke: SmokeReport | None = None
    kubeconfig: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.stages) and (
            self.smoke is None or self.smoke.ok
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.env,
            "ok": self.ok,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
            "stages": [vars(s) for s in self.stages],
            "smoke": self.smoke.to_dict() if self.smoke else None,
        }


class Reporter:
    """What the workflow tells the CLI (which draws it): stage boundaries, messages, apply events."""

    def stage(self, name: str, status: str, summary: str = "") -> None: ...

    def message(self, text: str) -> None: ...

    def apply_event(self, event: ProgressEvent) -> None: ...


def kubeconfig_path(env: Environment) -> Path:
    return state_dir() / "kubeconfig" / f"{env.name}.yaml"


def known_kubeconfig(env: Environment, override: Path | None = None) -> Path | None:
    """The kubeconfig for `env` that needs no cloud call: `--kubeconfig`, the environment's own
    file (`provider: kubeconfig`, $VARS expanded), else the one `kfdeploy up` saved; None when
    there is none. A named file that does not exist is an error, not a fall-through."""
    if override is not None:
        path = override.expanduser()
        if not path.is_file():
            raise ConfigError("no such kubeconfig file", file=str(override))
        return path
    if env.cluster.provider == "kubeconfig" and env.cluster.kubeconfig:
        path = Path(os.path.expandvars(env.cluster.kubeconfig)).expanduser()
        if not path.is_file():
            raise ConfigError("no such kubeconfig file", file=str(path), key="cluster.kubeconfig")
        return path
    saved = kubeconfig_path(env)
    return saved if saved.is_file() else None


def up(env: Environment, options: UpOptions, reporter: Reporter | None = None) -> UpResult:
    rep = reporter or Reporter()
    started = time.monotonic()
    journal = Journal(env.name)
    interrupted = journal.interrupted() or [
        k for k, v in journal.stages.items() if v.status == "failed"
    ]
    result = UpResult(env=env.name, resumed=bool(interrupted) and not options.dry_run)
    if result.resumed:
        rep.message(f"resuming: the previous run stopped during {', '.join(interrupted)}")
    elif not options.dry_run:
        journal.clear()  # the previous run completed: verify everything again

    def run_stage(name: str, fingerprint: str, fn: Callable[[], str]) -> None:
        if result.resumed and journal.is_done(name, fingerprint):
            rec = journal.stages[name]
            result.stages.append(
                StageResult(
                    name,
                    "skipped",
                    0.0,
                    f"done in the interrupted run ({rec.detail.get('summary', '')})",
                )
            )
            rep.stage(name, "skipped", "done in the interrupted run")
            return
        rep.stage(name, "start")
        t0 = time.monotonic()
        if not options.dry_run:
            journal.begin(name, fingerprint)
        try:
            summary = fn()
        except BaseException as exc:
            if not options.dry_run and not isinstance(exc, KeyboardInterrupt):
                journal.failed(name, str(exc))
            result.stages.append(StageResult(name, "failed", time.monotonic() - t0, str(exc)))
            rep.stage(name, "failed", str(exc))
            raise
        status = "dry-run" if options.dry_run and name in ("cluster", "apply") else "done"
        if not options.dry_run:
            journal.done(name, summary=summary)
        result.stages.append(StageResult(name, status, time.monotonic() - t0, summary))
        rep.stage(name, status, summary)

    # ---- preflight ----
    provider_box: dict[str, Any] = {}

    def preflight() -> str:
        from kfdeploy.render.kustomize import find_kustomize
        from kfdeploy.render.release import load_pin, locate_release

        kz = find_kustomize()
        release = locate_release(load_pin(env.kubeflow.release), options.manifests_dir)
        notes = [f"kustomize {kz.version}", f"Kubeflow {release.pin.release} ({release.origin})"]
        if env.simulated:
            from kfdeploy.sim import binaries

            binaries.require()  # the simulated cluster's programs must exist before provisioning
            notes.append("simulated control plane binaries ready")
        if options.kubeconfig is None:
            from kfdeploy.cloud.provider import get_provider

            provider_box["provider"] = get_provider(env)  # connects: credentials checked here
            notes.append(f"provider {env.cluster.provider}")
        return ", ".join(notes)

    run_stage("preflight", _fp(env.model_dump(mode="json")), preflight)

    # ---- cluster provisioning and rendering, side by side ----
    def cluster() -> str:
        if options.kubeconfig is not None:
            return f"using the given kubeconfig {options.kubeconfig}"
        provider = provider_box["provider"]
        plan = provider.plan(env)
        result.cluster_plan = plan
        if plan.blockers:
            from kfdeploy.errors import CloudError

            raise CloudError(f"cluster plan for {env.name} is blocked: {'; '.join(plan.blockers)}")
        if options.dry_run or not plan.changes:
            return _plan_text(plan, options.dry_run)
        provider.apply(plan, rep.message, keep_failed=options.keep_failed)
        return _plan_text(plan, False)

    def render() -> str:
        from kfdeploy.render.engine import render as do_render
        from kfdeploy.render.validate import Finding

        r = do_render(env, manifests_dir=options.manifests_dir)
        result.render = r
        errors = [f for f in r.findings if f["severity"] == "error"]
        if errors:
            from kfdeploy.errors import ValidationFailed

            first = Finding(**errors[0])
            raise ValidationFailed(f"{len(errors)} validation error(s); first: {first}", errors)
        return f"{sum(r.counts.values())} objects in {len(r.components)} components (cache {'hit' if r.cache_hit else 'miss'})"

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="up") as pool:
        f_render = pool.submit(run_stage, "render", _fp(env.model_dump(mode="json")), render)
        cluster_error: BaseException | None = None
        try:
            run_stage("cluster", _fp(env.cluster.model_dump(mode="json")), cluster)
        except BaseException as exc:  # render must still finish (or fail) before we leave
            cluster_error = exc
        render_error = f_render.exception()
    if cluster_error is not None:
        raise cluster_error
    if render_error is not None:
        raise render_error
    if result.render is None:  # render was skipped as done: load it (cache hit, fast)
        from kfdeploy.render.engine import render as do_render

        result.render = do_render(env, manifests_dir=options.manifests_dir)

    # ---- kubeconfig ----
    def kubeconfig() -> str:
        if options.kubeconfig is not None:
            result.kubeconfig = options.kubeconfig
            return str(options.kubeconfig)
        if options.dry_run and result.cluster_plan is not None and not result.cluster_plan.exists:
            return "the cluster does not exist yet (dry run)"
        path = provider_box["provider"].kubeconfig(env, kubeconfig_path(env))
        result.kubeconfig = path
        return str(path)

    run_stage("kubeconfig", _fp([str(options.kubeconfig), env.cluster_name]), kubeconfig)
    if result.kubeconfig is None and journal.is_done(
        "kubeconfig", _fp([str(options.kubeconfig), env.cluster_name])
    ):
        result.kubeconfig = options.kubeconfig or kubeconfig_path(env)
    if result.kubeconfig is None:
        result.seconds = time.monotonic() - started
        return result  # dry run against a cluster that does not exist yet: nothing more to show

    from kfdeploy.cluster.client import connect

    kube = connect(result.kubeconfig, env.cluster.context if options.kubeconfig else None)

    # ---- context guard (always: it is cheap and it is the last line before writes) ----
    def guard() -> str:
        from kfdeploy.cluster.identity import claim, read_identity
        from kfdeploy.plan.guard import check

        seen = read_identity(kube)
        check(env, seen)
        if not options.dry_run and seen.owner is None:
            claim(kube, env.owner)
            return f"{seen.api_server} claimed for {env.owner}"
        return f"{seen.api_server} belongs to {env.owner}"

    rep.stage("guard", "start")
    t0 = time.monotonic()
    try:
        summary = guard()
    except KfdeployError as exc:
        result.stages.append(StageResult("guard", "failed", time.monotonic() - t0, str(exc)))
        rep.stage("guard", "failed", str(exc))
        raise
    result.stages.append(StageResult("guard", "done", time.monotonic() - t0, summary))
    rep.stage("guard", "done", summary)

    # ---- apply ----
    def apply() -> str:
        from kfdeploy.cluster.inventory import ApplySet
        from kfdeploy.workflows.apply import ApplyOptions, apply_objects
        from kfdeploy.workflows.secrets import with_secrets

        assert result.render is not None
        objects = with_secrets(
            kube, env, result.render.objects, env_file=options.env_file, dry_run=options.dry_run
        )
        summary = apply_objects(
            kube,
            objects,
            ApplySet.for_environment(env.name),
            options=ApplyOptions(
                dry_run=options.dry_run,
                prune=options.prune,
                force_conflicts=options.force_conflicts,
                timeout=options.timeout,
            ),
            progress=rep.apply_event,
        )
        result.apply = summary
        totals = summary.totals()
        return ", ".join(f"{n} {a}" for a, n in sorted(totals.items())) + (
            f", {len(summary.prune.delete)} pruned"
            if getattr(summary.prune, "delete", None)
            else ""
        )

    assert result.render is not None
    run_stage("apply", _fp([result.render.key, kube.host, options.prune]), apply)

    # ---- smoke checks ----
    if options.smoke and not options.dry_run:
        rep.stage("smoke", "start")
        t0 = time.monotonic()
        from kfdeploy.checks import run_checks

        report = run_checks(env, result.kubeconfig, result.render.objects)
        result.smoke = report
        status = "done" if report.ok else "failed"
        counts = report.counts()
        text = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        result.stages.append(StageResult("smoke", status, time.monotonic() - t0, text))
        rep.stage("smoke", status, text)
    result.seconds = time.monotonic() - started
    return result


def _fp(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_text(plan: ClusterPlan, dry_run: bool) -> str:
    if not plan.changes:
        return "no changes"
    verb = "would" if dry_run else "did"
    return f"{verb}: " + "; ".join(c.describe() for c in plan.changes)
