"""The simulator's small REST client: every call is bounded in time."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kfdeploy.sim.kube import KubeClient
from kfdeploy.sim.pki import ClusterPKI


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure()
    admin = pki.client("admin", "admin", ("system:masters",))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (in the backlog) and never speaks TLS
        port = silent.getsockname()[1]
        client = KubeClient(
            f"https://127.0.0.1:{port}",
            pki.ca.cert_path,
            admin.cert_path,
            admin.key_path,
            timeout=1,
        )
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - urllib3's exact class is not the point
            client.request("GET", "/readyz")
        assert time.monotonic() - started < 10
