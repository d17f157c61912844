"""The context guard's decisions and the journal's resume bookkeeping (pure, no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfdeploy.config.load import load_environment
from kfdeploy.errors import GuardError
from kfdeploy.plan.guard import ClusterIdentity, check
from kfdeploy.workflows.journal import Journal


def _env(tmp_path: Path, name: str, extra: str = "", simulated: bool = False) -> object:
    f = tmp_path / f"{name}.yaml"
    f.write_text(
        f"simulated: {str(simulated).lower()}\nkubeflow: {{release: '26.03'}}\n"
        f"cluster:\n  provider: kubeconfig\n  kubeconfig: /x\n{extra}"
    )
    return load_environment(str(f)).env


def test_cluster_owned_by_another_environment_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, "cern-staging")
    seen = ClusterIdentity("https://127.0.0.1:6443", owner="local", simulated=False)
    with pytest.raises(GuardError, match="belongs to environment 'local'"):
        check(env, seen)  # type: ignore[arg-type]


def test_simulated_cluster_is_refused_for_a_real_environment(tmp_path: Path) -> None:
    env = _env(tmp_path, "cern-staging")
    with pytest.raises(GuardError, match="simulated cluster"):
        check(env, ClusterIdentity("https://127.0.0.1:6443", owner=None, simulated=True))  # type: ignore[arg-type]


def test_api_server_pattern(tmp_path: Path) -> None:
    env = _env(
        tmp_path, "prod", "  identity: {api_server: '^https://[^/]+\\.cern\\.ch(:\\d+)?$'}\n"
    )
    check(env, ClusterIdentity("https://kf-prod.cern.ch:6443", owner="prod", simulated=False))  # type: ignore[arg-type]
    with pytest.raises(GuardError, match="expects an API server matching"):
        check(env, ClusterIdentity("https://127.0.0.1:6443", owner=None, simulated=False))  # type: ignore[arg-type]


def test_own_and_unclaimed_clusters_pass(tmp_path: Path) -> None:
    env = _env(tmp_path, "local", simulated=True)
    check(env, ClusterIdentity("https://127.0.0.1:1", owner=None, simulated=True))  # type: ignore[arg-type]
    check(env, ClusterIdentity("https://127.0.0.1:1", owner="local", simulated=True))  # type: ignore[arg-type]


def test_provider_address_must_match(tmp_path: Path) -> None:
    env = _env(tmp_path, "local", simulated=True)
    check(
        env,
        ClusterIdentity("https://127.0.0.1:7000", None, True),
        expected_api="https://127.0.0.1:7000/",
    )  # type: ignore[arg-type]
    with pytest.raises(GuardError, match="provider says"):
        check(
            env,
            ClusterIdentity("https://127.0.0.1:7000", None, True),
            expected_api="https://127.0.0.1:7001",
        )  # type: ignore[arg-type]


def test_journal_resumes_and_survives_restarts(tmp_path: Path) -> None:
    j = Journal("local", tmp_path)
    j.begin("render", "k1")
    j.done("render", objects=675)
    j.begin("apply", "k2")  # killed here
    again = Journal("local", tmp_path)
    assert again.is_done("render", "k1")
    assert not again.is_done("render", "other-inputs")
    assert again.interrupted() == ["apply"]
    assert not again.is_done("apply", "k2")
    again.begin("apply", "k2")
    again.done("apply")
    assert Journal("local", tmp_path).is_done("apply", "k2")


def test_corrupt_journal_means_redo(tmp_path: Path) -> None:
    j = Journal("local", tmp_path)
    j.path.parent.mkdir(parents=True, exist_ok=True)
    j.path.write_text("{not json")
    assert Journal("local", tmp_path).stages == {}


def test_guard_recognises_the_simulators_node_label() -> None:
    from kfdeploy.plan.guard import SIMULATED_LABEL
    from kfdeploy.sim.nodes import SIM_LABEL

    assert SIMULATED_LABEL == SIM_LABEL


def test_journal_takes_concurrent_stages(tmp_path: Path) -> None:
    """up runs render beside provisioning: both write the journal at once."""
    import threading

    j = Journal("local", tmp_path)
    errors: list[BaseException] = []

    def stage(name: str) -> None:
        try:
            for i in range(50):
                j.begin(name, str(i))
                j.done(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stage, args=(n,)) for n in ("render", "cluster")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Journal("local", tmp_path).is_done("render", "49")
