"""Helpers for the apply tests and bench: platform renders, fresh clusters, a fault proxy.

The fault proxy listens on 127.0.0.1 only, speaks plain HTTP to kfdeploy (so it can see and
count every request) and HTTPS with the admin client certificate to the API server. It fails a
chosen fraction of requests the ways a real API server or load balancer does: 429 with
Retry-After, 503, and TCP resets — some before the request reaches the API server, some after
(the change is made but the answer is lost, which only idempotent retries survive).
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kfdeploy.config.load import default_environments_dir, load_environment
from kfdeploy.render.engine import render
from kfdeploy.render.objects import RenderedObject
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.nodes import SimNode

MANIFESTS = Path("/work/shared/kubeflow-manifests")
MAGNUM = "magnum.openstack.org"
# Room for the whole platform's requests (about 50 Deployments) with headroom: the point of the
# tests is ordering and convergence, not scheduling pressure.
PLATFORM_NODES = [
    SimNode(
        name=f"apply-worker-{i}",
        cpu="32",
        memory="128Gi",
        labels={f"{MAGNUM}/nodegroup": "default-worker", f"{MAGNUM}/role": "worker"},
    )
    for i in range(3)
]


def manifests_dir() -> Path:
    import os

    return Path(os.environ.get("KFDEPLOY_MANIFESTS") or MANIFESTS)


def env_file(release: str, directory: Path) -> Path:
    """The `local` environment (sim overlay on) pinned to `release`, as a file of its own."""
    data = yaml.safe_load((default_environments_dir() / "local.yaml").read_text(encoding="utf-8"))
    data["kubeflow"]["release"] = release
    path = directory / "local.yaml"  # same name: same ApplySet as the real `local`
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def platform(release: str, directory: Path) -> list[RenderedObject]:
    loaded = load_environment(str(env_file(release, directory)))
    objects = render(loaded.env, manifests_dir=manifests_dir()).objects
    return sim_safe(objects)


def sim_safe(objects: list[RenderedObject]) -> list[RenderedObject]:
    """Assert the sim overlay did its job: nothing asks the API server to dial a webhook."""
    for o in objects:
        assert o.kind not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"), o
        conv = (o.obj.get("spec") or {}).get("conversion") or {}
        assert o.kind != "CustomResourceDefinition" or conv.get("strategy") != "Webhook", o
    return objects


def write_yaml(objects: list[RenderedObject], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all([o.obj for o in objects], sort_keys=False), encoding="utf-8")
    return path


def start_fresh(state_dir: Path, name: str) -> LocalCluster:
    cluster = LocalCluster(state_dir, name=name)
    cluster.start(PLATFORM_NODES, timeout=180)
    return cluster


# ---- the fault proxy --------------------------------------------------------------------------


class FaultProxy:
    def __init__(self, cluster: LocalCluster, fault_rate: float = 0.0, seed: int = 4) -> None:
        self.cluster = cluster
        self.fault_rate = fault_rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        up = urlparse(cluster.api_url)
        self.upstream = (up.hostname or "127.0.0.1", up.port or 443)
        admin = cluster.pki.client("admin", "admin", ("system:masters",))
        self.ssl = ssl.create_default_context(cafile=str(cluster.pki.ca.cert_path))
        self.ssl.load_cert_chain(str(admin.cert_path), str(admin.key_path))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "p", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "p", "user": {}}],
                    "contexts": [{"name": "p", "context": {"cluster": "p", "user": "p"}}],
                    "current-context": "p",
                }
            ),
            encoding="utf-8",
        )
        return path

    def _fault(self) -> str | None:
        with self.lock:
            if self.random.random() >= self.fault_rate:
                return None
            return self.random.choice(["429", "503", "reset-before", "reset-after"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reset(self) -> None:
                # SO_LINGER 0 turns close() into a TCP RST: "connection reset by peer".
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests[self.command] += 1
                fault = proxy._fault()
                if fault:
                    with proxy.lock:
                        proxy.faults[fault] += 1
                if fault == "429":
                    msg = b'{"kind":"Status","status":"Failure","message":"too many requests","code":429}'
                    self._reply(429, msg, {"Retry-After": "1", "Content-Type": "application/json"})
                    return
                if fault == "503":
                    msg = b'{"kind":"Status","status":"Failure","message":"unavailable","code":503}'
                    self._reply(503, msg, {"Content-Type": "application/json"})
                    return
                if fault == "reset-before":
                    self._reset()
                    return
                conn = http.client.HTTPSConnection(*proxy.upstream, context=proxy.ssl, timeout=120)
                try:
                    hdrs = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection", "authorization")
                    }
                    conn.request(self.command, self.path, body=body or None, headers=hdrs)
                    resp = conn.getresponse()
                    data = resp.read()
                    if fault == "reset-after":
                        self._reset()
                        return
                    out = {
                        k: v
                        for k, v in resp.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    }
                    self._reply(resp.status, data, out)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fault_proxy(cluster: LocalCluster, fault_rate: float = 0.0) -> Iterator[FaultProxy]:
    with FaultProxy(cluster, fault_rate) as p:
        yield p


# ---- convergence, checked independently of the waits that apply used -------------------------


def assert_converged(kube: Any, objects: list[RenderedObject], env_name: str = "local") -> None:
    """Every CRD Established, every workload rolled out, every object live with its hash, and
    no ApplySet member the render does not have."""
    from kfdeploy.cluster.apply import HASH_ANNOTATION, Applier, prepare
    from kfdeploy.cluster.inventory import ApplySet
    from kfdeploy.cluster.waits import crd_ready, workload_ready
    from kfdeploy.plan.phases import Scope

    applyset = ApplySet.for_environment(env_name)
    scope = Scope(objects)
    crds = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    want_crds = {o.name for o in objects if o.kind == "CustomResourceDefinition"}
    live_crds = {c["metadata"]["name"]: c for c in crds}
    assert want_crds <= set(live_crds), want_crds - set(live_crds)
    not_established = [n for n in want_crds if not crd_ready(live_crds[n]).ready]
    assert not not_established, not_established

    for group, kind, plural in (
        ("apps", "Deployment", "deployments"),
        ("apps", "StatefulSet", "statefulsets"),
        ("apps", "DaemonSet", "daemonsets"),
    ):
        want = {scope.key(o) for o in objects if o.kind == kind}
        items = kube.get(f"/apis/{group}/v1/{plural}")["items"]
        live = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}
        for key in want:
            obj = live.get((key.namespace, key.name))
            assert obj is not None, f"{key} missing"
            r = workload_ready(kind, obj)
            assert r.ready, f"{key}: {r.why}"

    applier = Applier(kube, applyset, scope)
    desired = {scope.key(o): prepare(o, applyset, scope) for o in objects}
    members = applier.members({(o.group, o.kind) for o in objects})
    extra = [m for m in members if m.key not in desired]
    assert not extra, [str(m) for m in extra[:10]]
    for key, obj in desired.items():
        meta = applier.live_index(key.group, key.kind).get(key)
        assert meta is not None, f"{key} not applied"
        assert meta.content_hash == obj["metadata"]["annotations"][HASH_ANNOTATION], key


def fresh_cluster_fixture(request: Any, tmp_path_factory: Any, name: str) -> Iterator[LocalCluster]:
    """Body of a module-scoped `cluster` fixture: a fresh control plane of the module's own,
    its logs kept when the session had failures, destroyed afterwards."""
    from kfdeploy.errors import KfdeployError
    from kfdeploy.sim.testing import keep_logs, require_binaries, unavailable

    require_binaries()
    try:
        c = start_fresh(tmp_path_factory.mktemp(name), name)
    except KfdeployError as exc:
        unavailable(f"fresh control plane failed to start: {exc}")
    yield c
    if request.session.testsfailed:
        keep_logs(c)
    c.destroy()
