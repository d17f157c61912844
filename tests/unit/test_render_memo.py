"""A warm `kfdeploy render` answered from its memo: same output as the full CLI, and any change
to what the render depended on sends it the full way again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


# The console script's entry point, run so that the test can see what it imported.
_RUN = """
import sys
sys.argv = ["kfdeploy", *sys.argv[1:]]
from kfdeploy.entry import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print("full-cli" if "kfdeploy.config.model" in sys.modules else "memo", file=sys.stderr)
"""


def _render(env_file: Path, out: Path, cache: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN,
            "render",
            str(env_file),
            "--out",
            str(out),
            "--output",
            "json",
            *extra,
        ],
        env={**os.environ, "KFDEPLOY_CACHE": str(cache)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict = json.loads(proc.stdout)
    result["path"] = proc.stderr.strip().splitlines()[-1]
    return result


@pytest.mark.slow
def test_warm_render_from_memo_matches_the_full_cli(tmp_path: Path) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text((DATA / "envs" / "plain-26-03.yaml").read_text())
    cache = tmp_path / "cache"
    first = _render(env_file, tmp_path / "a", cache)
    assert first["cache"] == "miss" and first["path"] == "full-cli"
    memos = list((cache / "render" / "memo").glob("*.json"))
    assert len(memos) == 1
    assert "import" not in memos[0].read_text()  # a plain record: files, digests, summary

    second = _render(env_file, tmp_path / "b", cache)
    assert second["cache"] == "hit" and second["path"] == "memo"
    for key in ("environment", "release", "source", "objects", "components", "findings"):
        assert second[key] == first[key]
    for f in first["files"]:
        name = Path(f).name
        assert (tmp_path / "b" / name).read_bytes() == Path(f).read_bytes()

    # Touching the environment file sends the next render the full way (which finds the
    # render cache still valid: same content) and leaves a fresh memo.
    env_file.write_text(env_file.read_text() + "\n")
    third = _render(env_file, tmp_path / "c", cache)
    assert third["path"] == "full-cli" and third["cache"] == "hit"
    assert third["objects"] == first["objects"]
    assert _render(env_file, tmp_path / "c", cache)["path"] == "memo"
    # Options the fast path does not know always go the full way.
    fourth = _render(env_file, tmp_path / "d", cache, "--no-cache")
    assert fourth["cache"] == "miss" and fourth["path"] == "full-cli"
