"""`kfdeploy sim isolate`: runs the command in the namespace, or says why it cannot."""

from __future__ import annotations

import pytest

from kfdeploy.sim import isolate, netns


def test_required_isolation_fails_without_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "unavailable_reason", lambda: "not running as root")
    monkeypatch.setattr(isolate.os, "execv", lambda *a: pytest.fail("must not run the command"))
    with pytest.raises(SystemExit) as exit_info:
        isolate.exec_isolated(["true"], required=True)
    assert exit_info.value.code == 4


def test_optional_isolation_runs_the_command_unisolated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(netns, "unavailable_reason", lambda: "not running as root")
    monkeypatch.setattr(isolate.os, "execv", lambda prog, argv: calls.append((prog, argv)))
    isolate.exec_isolated(["true", "x"])
    assert calls and calls[0][1] == ["true", "x"]
    assert "without network isolation" in capsys.readouterr().err


def test_isolated_command_goes_through_nsenter(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(netns, "unavailable_reason", lambda: None)
    monkeypatch.setattr(netns, "ensure", lambda name: netns.path_of(name))
    monkeypatch.setattr(isolate.os, "execv", lambda prog, argv: calls.append((prog, argv)))
    isolate.exec_isolated(["true"])
    prog, argv = calls[0]
    assert prog.endswith("nsenter")
    assert f"--net={netns.path_of(isolate.ISOLATED_NETNS)}" in argv
    assert argv[-1].endswith("true")
