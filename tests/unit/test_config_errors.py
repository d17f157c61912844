"""Every malformed environment in tests/data/bad-envs gives one line naming file, key and
expectation, exit code 2, and no traceback — through the real CLI entry point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kfdeploy.cli import main

BAD = Path(__file__).resolve().parents[1] / "data" / "bad-envs"
CASES = sorted(BAD.glob("*.yaml"))


def _expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"# expect: (.+)", first)
    assert m, f"{path.name} must start with '# expect: <message part>'"
    return m.group(1)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_bad_environment_is_one_line_exit_2(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["kfdeploy", "validate", str(path)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1, out.err
    line = lines[0]
    assert "Traceback" not in out.err + out.out
    assert line.startswith("error: ")
    assert path.name in line, "the error names the file"
    assert _expectation(path) in line


def test_bad_environment_through_a_real_process() -> None:
    """The installed console script behaves the same (no traceback, exit 2)."""
    path = BAD / "10-nodegroup-count-above-max.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", "from kfdeploy.cli import main; main()", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(
        r"10-nodegroup-count-above-max\.yaml:\d+: cluster\.nodegroups\.0: count 5", proc.stderr
    )
