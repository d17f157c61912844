"""kfdeploy.files.write_atomic: the one way kfdeploy replaces a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kfdeploy.files import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_whole_files_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "state.json"
    assert write_atomic(target, "first") == target
    write_atomic(target, b"second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(target) == 0o666 & ~umask


def test_private_files_are_owner_only_from_the_first_byte(tmp_path: Path) -> None:
    target = tmp_path / "kubeconfig"
    target.write_text("old")
    target.chmod(0o644)
    write_atomic(target, "secret: yes\n", private=True)
    assert _mode(target) == 0o600
    assert target.read_text() == "secret: yes\n"
