"""The per-environment journal: which stages of `up` finished, with what inputs.

An interrupted `up` (Ctrl-C, a killed CI job, a lost laptop lid) resumes from the journal: a
stage recorded as done with the same input fingerprint is not redone. Every stage is idempotent
as well, so a lost or stale journal costs time, never correctness.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfdeploy.files import write_atomic


def state_dir() -> Path:
    return Path(os.environ.get("KFDEPLOY_STATE") or Path.home() / ".local" / "state" / "kfdeploy")


@dataclass
class StageRecord:
    status: str  # running | done | failed
    fingerprint: str
    started: float
    finished: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else round(self.finished - self.started, 3)


class Journal:
    def __init__(self, env_name: str, root: Path | None = None) -> None:
        self.path = (root or state_dir()) / "journal" / f"{env_name}.json"
        self.env_name = env_name
        self.stages: dict[str, StageRecord] = {}
        self.resumed = False
        # Stages run in parallel threads (render beside provisioning): one writer at a time.
        self._lock = threading.RLock()
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.stages = {k: StageRecord(**v) for k, v in data.get("stages", {}).items()}
            except (ValueError, TypeError):
                self.stages = {}  # a corrupt journal is a stale one: redo every stage

    def is_done(self, stage: str, fingerprint: str) -> bool:
        rec = self.stages.get(stage)
        return rec is not None and rec.status == "done" and rec.fingerprint == fingerprint

    def interrupted(self) -> list[str]:
        """Stages a previous run started but did not finish (it was killed or crashed)."""
        return [k for k, v in self.stages.items() if v.status == "running"]

    def begin(self, stage: str, fingerprint: str) -> None:
        with self._lock:
            self.stages[stage] = StageRecord("running", fingerprint, time.time())
            self._save()

    def done(self, stage: str, **detail: Any) -> None:
        with self._lock:
            rec = self.stages[stage]
            rec.status, rec.finished, rec.detail = "done", time.time(), detail
            self._save()

    def failed(self, stage: str, error: str) -> None:
        with self._lock:
            rec = self.stages[stage]
            rec.status, rec.finished, rec.detail = "failed", time.time(), {"error": error}
            self._save()

    def invalidate(self, *stages: str) -> None:
        for s in stages:
            self.stages.pop(s, None)
        self._save()

    def clear(self) -> None:
        self.stages = {}
        if self.path.exists():
            self.path.unlink()

    def _save(self) -> None:
        with self._lock:
            data = {
                "environment": self.env_name,
                "stages": {k: vars(v) for k, v in self.stages.items()},
            }
            # atomic: a kill mid-write leaves the previous journal
            write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True))
