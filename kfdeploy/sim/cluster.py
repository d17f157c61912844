"""A real Kubernetes control plane on this machine, with simulated nodes.

`LocalCluster` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the fake
kubelet (`kfdeploy.sim.kubelet`) as daemons that outlive the caller, all inside a loopback-only
network namespace when the machine allows it (root), plus a forwarder that exposes the API server on
the host's 127.0.0.1. Everything lives in one state directory:

    state.json            mode, ports, namespace name, versions
    pki/                  CA, serving and client certificates, service-account keys
    etcd/                 etcd data (a restart on the same directory keeps every object)
    kubeconfig            admin kubeconfig for callers on the host (mode 0600)
    internal/             kubeconfigs the components use inside the namespace
    logs/<component>.log  run/<component>.pid

Default state directory: `$KFDEPLOY_CACHE/sim/<name>` (KFDEPLOY_CACHE: ~/.cache/kfdeploy).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.errors import WaitTimeout
from kfdeploy.files import write_atomic
from kfdeploy.sim import binaries, netns
from kfdeploy.sim.errors import SimNotRunning, SimStartError
from kfdeploy.sim.kube import KubeApiError, KubeClient
from kfdeploy.sim.kubelet import SIM_PROVISIONER, FakeKubelet
from kfdeploy.sim.nodes import INDEX_ANNOTATION, SIM_LABEL, SimNode, node_object
from kfdeploy.sim.pki import ClusterPKI
from kfdeploy.sim.process import Daemon

__all__ = ["LocalCluster", "SimNode", "default_state_dir"]

log = logging.getLogger(__name__)

COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "forwarder",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
)
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_STORAGE_CLASS = "standard"
NETNS_PREFIX = "kfdsim-"
_LABELS_ANNOTATION = "sim.kfdeploy.dev/labels"
# Inside our own namespace nothing else listens, so fixed well-known ports are safe and make logs
# and kubeconfigs readable. In the host namespace (fallback) free ports are picked instead.
_NETNS_PORTS = {
    "etcd": 2379,
    "etcd_peer": 2380,
    "apiserver": 6443,
    "kcm": 10257,
    "scheduler": 10259,
}


def default_state_dir(name: str = "kfdeploy-sim") -> Path:
    return binaries.cache_root() / "sim" / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class _State:
    name: str
    mode: str  # "netns" or "host"
    netns: str | None
    ports: dict[str, int]
    host_port: int  # what callers on the host dial (forwarder in netns mode, apiserver otherwise)
    versions: dict[str, str] = field(default_factory=dict)
    network_note: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> _State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class LocalCluster:
    def __init__(self, state_dir: Path | None = None, name: str = "kfdeploy-sim") -> None:
        self.name = name
        self.state_dir = (state_dir or default_state_dir(name)).resolve()
        self.pki = ClusterPKI(self.state_dir / "pki")
        self._state_file = self.state_dir / "state.json"
        self.log_dir = self.state_dir / "logs"
        self._run_dir = self.state_dir / "run"

    # -- public properties ----------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self._require_state().host_port}"

    @property
    def ca_cert_pem(self) -> bytes:
        return self.pki.ca_cert_pem

    def sign_client_csr(self, csr_pem: bytes, days: int = 365) -> bytes:
        return self.pki.sign_csr(csr_pem, days=days)

    def daemon(self, component: str) -> Daemon:
        return Daemon(component, self._run_dir, self.log_dir)

    @property
    def netns_path(self) -> Path | None:
        state = _State.load(self._state_file)
        return netns.path_of(state.netns) if state and state.netns else None

    def client(self, timeout: float = 15) -> KubeClient:
        """Admin client for the host side (through the forwarder in netns mode)."""
        admin = self.pki.client("admin", "admin", ("system:masters",))
        return KubeClient(
            self.api_url, self.pki.ca.cert_path, admin.cert_path, admin.key_path, timeout=timeout
        )

    # -- lifecycle ------------------------------------------------------------------------

    def is_running(self) -> bool:
        if _State.load(self._state_file) is None:
            return False
        return all(self.daemon(c).running() for c in self._components())

    def start(
        self,
        nodes: Sequence[SimNode],
        timeout: float = 120,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        """Start (or reuse) the control plane and make the simulated nodes match `nodes`."""
        for node in nodes:
            node.validate()
        deadline = time.monotonic() + timeout
        with self._locked(deadline):
            self._start_locked(nodes, deadline, progress)

    def _start_locked(
        self, nodes: Sequence[SimNode], deadline: float, progress: Callable[[str], None]
    ) -> None:
        if self.is_running():
            progress("reusing the running control plane")
            self._wait_ready(deadline)
            self.set_nodes(nodes)
            return
        # Something is half up (a crashed component, a reboot): restart cleanly on the same data.
        self._stop_components(30)
        bins = binaries.require()
        state = self._prepare(bins)
        try:
            self._launch(state, bins, deadline, progress)
            progress("registering simulated nodes")
            self._ensure_cluster_objects(deadline)
            self.set_nodes(nodes)
        except Exception as exc:
            failures = self._dead_components()
            logs = "\n".join(f"--- {c} ---\n{self.daemon(c).tail(15)}" for c in failures)
            self._stop_components(30)
            if isinstance(exc, (SimStartError, WaitTimeout)):
                exc.message += f"\ncomponent logs: {self.log_dir}" + (f"\n{logs}" if logs else "")
                raise
            raise SimStartError(
                f"simulated control plane failed to start: {exc}; logs in {self.log_dir}\n{logs}",
                log_dir=self.log_dir,
            ) from exc

    def stop(self, timeout: float = 30) -> None:
        """Stop every component (reverse start order); data and credentials stay."""
        with self._locked(time.monotonic() + timeout + 30):
            self._stop_components(timeout)

    def _stop_components(self, timeout: float) -> None:
        per = max(timeout / len(COMPONENTS), 2)
        for component in reversed(COMPONENTS):
            self.daemon(component).stop(timeout=per)

    def destroy(self) -> None:
        """Stop, remove the network namespace and delete the state directory."""
        with self._locked(time.monotonic() + 60):
            self._stop_components(30)
            state = _State.load(self._state_file)
            if state and state.netns:
                with contextlib.suppress(netns.NetnsError):
                    netns.delete(state.netns)
            shutil.rmtree(self.state_dir, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        """Serialise start/stop/destroy of one state directory across processes."""
        if not self.state_dir.exists():
            self.state_dir.mkdir(parents=True, mode=0o700)
        # The lock file sits beside the state directory so destroy() can remove the directory
        # while holding it.
        lock_path = self.state_dir.parent / f".{self.state_dir.name}.lock"
        with lock_path.open("w") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WaitTimeout(
                            f"another kfdeploy process holds {lock_path} (starting or stopping)"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- nodes ----------------------------------------------------------------------------

    def set_nodes(self, nodes: Sequence[SimNode]) -> None:
        """Register, update or remove simulated nodes so exactly `nodes` exist, all Ready."""
        if not self.is_running():
            raise SimNotRunning(f"no simulated cluster is running in {self.state_dir}")
        for node in nodes:
            node.validate()
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise SimStartError(f"duplicate simulated node names in {names}")
        client = self.client()
        existing = {
            n["metadata"]["name"]: n
            for n in client.get("/api/v1/nodes", labelSelector=f"{SIM_LABEL}=true")["items"]
        }
        used = {
            int((n["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "0"))
            for n in existing.values()
        }
        for name in set(existing) - set(names):
            client.delete(f"/api/v1/nodes/{name}")
        for node in nodes:
            if node.name in existing:
                index = int(existing[node.name]["metadata"]["annotations"][INDEX_ANNOTATION])
            else:
                index = next(i for i in range(len(used) + len(nodes) + 1) if i not in used)
                used.add(index)
            desired = node_object(node, index)
            desired["metadata"]["annotations"][_LABELS_ANNOTATION] = json.dumps(sorted(node.labels))
            if node.name not in existing:
                client.create("/api/v1/nodes", desired)
                continue
            current = existing[node.name]
            # Remove labels we set before and no longer want; leave labels others added alone.
            previous = json.loads(
                (current["metadata"].get("annotations") or {}).get(_LABELS_ANNOTATION, "[]")
            )
            labels: dict[str, str | None] = {k: None for k in previous if k not in node.labels}
            labels.update(desired["metadata"]["labels"])
            # Keep taints the node lifecycle controller manages (node.kubernetes.io/*).
            system_taints = [
                t
                for t in (current["spec"].get("taints") or [])
                if t["key"].startswith("node.kubernetes.io/")
            ]
            client.merge_patch(
                f"/api/v1/nodes/{node.name}",
                {
                    "metadata": {
                        "labels": labels,
                        "annotations": desired["metadata"]["annotations"],
                    },
                    "spec": {"taints": desired["spec"]["taints"] + system_taints},
                },
            )
        # Post Ready status and leases now rather than at the kubelet's next heartbeat.
        FakeKubelet(client).sync_nodes()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = _State.load(self._state_file)
        components = {
            c: {
                "running": self.daemon(c).running(),
                "pid": self.daemon(c).pid(),
                "rss_bytes": self.daemon(c).rss_bytes(),
            }
            for c in self._components()
        }
        running = bool(state) and all(v["running"] for v in components.values())
        result: dict[str, Any] = {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "running": running,
            "api_url": self.api_url if state else None,
            "kubeconfig": str(self.kubeconfig_path) if state else None,
            "network": self._network_status(state),
            "versions": dict(state.versions) if state else {},
            "components": components,
            "rss_bytes_total": sum(v["rss_bytes"] for v in components.values()),
            "log_dir": str(self.log_dir),
            "nodes": [],
        }
        if running:
            try:
                client = self.client(timeout=5)
                result["versions"]["server"] = client.get("/version").get("gitVersion")
                result["nodes"] = [_node_summary(n) for n in client.get("/api/v1/nodes")["items"]]
            except Exception as exc:  # status must describe a sick cluster, not fail on it
                result["error"] = str(exc)
        return result

    def _network_status(self, state: _State | None) -> dict[str, Any]:
        if state is None:
            return {}
        info: dict[str, Any] = {"mode": state.mode, "egress_selector": "cluster egress refused"}
        if state.mode == "netns" and state.netns:
            info["netns"] = state.netns
            with contextlib.suppress(netns.NetnsError):
                info["interfaces"] = netns.interfaces(state.netns)
            info["guarantee"] = (
                "control plane runs in a loopback-only network namespace: any dial to a "
                "non-loopback address fails with ENETUNREACH"
            )
            info["webhooks"] = "allowed (calls fail inside the namespace; nothing leaves loopback)"
        else:
            info["guarantee"] = (
                "host network namespace ("
                + state.network_note
                + "): kube-apiserver's cluster egress "
                "(webhooks, aggregated APIs, conversion) goes to a refusing socket"
            )
            info["webhooks"] = (
                "must be absent: remove admission/conversion webhooks (the sim overlay does)"
            )
        return info

    # -- internals ------------------------------------------------------------------------

    def _components(self) -> tuple[str, ...]:
        state = _State.load(self._state_file)
        if state and state.mode == "host":
            return tuple(c for c in COMPONENTS if c != "forwarder")
        return COMPONENTS

    def _dead_components(self) -> list[str]:
        return [
            c
            for c in self._components()
            if self.daemon(c).pid_file.exists() and not self.daemon(c).running()
        ]

    def _require_state(self) -> _State:
        state = _State.load(self._state_file)
        if state is None:
            raise SimNotRunning(
                f"no simulated cluster in {self.state_dir}", hint="run `kfdeploy sim start` first"
            )
        return state

    def _netns_name(self) -> str:
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        return f"{NETNS_PREFIX}{digest}"

    def _prepare(self, bins: binaries.Binaries) -> _State:
        """Create/refresh state: namespace, ports, PKI, kubeconfigs, config files."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        previous = _State.load(self._state_file)
        reason = netns.unavailable_reason()
        if os.environ.get("KFDEPLOY_SIM_NETNS", "").lower() in ("0", "false", "no"):
            reason = "disabled by KFDEPLOY_SIM_NETNS=0"
        ns_name = None
        if reason is None:
            try:
                ns_name = self._netns_name()
                netns.ensure(ns_name)
            except netns.NetnsError as exc:
                reason, ns_name = f"cannot create a network namespace: {exc}", None
        if ns_name is not None:
            ports = dict(_NETNS_PORTS)
            host_port = (
                previous.host_port if previous and previous.mode == "netns" else _free_port()
            )
        else:
            ports = dict(previous.ports) if previous and previous.mode == "host" else {}
            for key in _NETNS_PORTS:
                # etcd's peer URL is stored in its data, so that port is kept even if busy-looking
                if key not in ports or (key != "etcd_peer" and not _port_free(ports[key])):
                    ports[key] = _free_port()
            host_port = ports["apiserver"]
        if ns_name is not None and not _port_free(host_port):
            host_port = _free_port()
        state = _State(
            name=self.name,
            mode="netns" if ns_name else "host",
            netns=ns_name,
            ports=ports,
            host_port=host_port,
            versions={
                "kubernetes": bins.kubernetes_version,
                "etcd": bins.etcd_version,
                "binaries": bins.source,
            },
            network_note=reason or "",
        )
        if ns_name is None:
            log.warning("simulated cluster runs in the host network namespace: %s", reason)
        state.save(self._state_file)

        self.pki.ensure()
        internal = self.state_dir / "internal"
        internal.mkdir(exist_ok=True)
        inside = f"https://127.0.0.1:{ports['apiserver']}"
        users = {
            "admin": ("admin", ("system:masters",)),
            "kube-controller-manager": ("system:kube-controller-manager", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
            # One process plays every node's kubelet, so it cannot be one node's identity
            # (the Node authorizer would confine it to that node).
            "kubelet": ("kfdeploy-sim-kubelet", ("system:masters",)),
        }
        for stem, (cn, groups) in users.items():
            pair = self.pki.client(stem, cn, groups)
            self._write_kubeconfig(
                internal / f"{stem}.kubeconfig", inside, pair.cert_path, pair.key_path
            )
        admin = self.pki.client("admin", "admin", ("system:masters",))
        self._write_kubeconfig(
            self.kubeconfig_path, f"https://127.0.0.1:{host_port}", admin.cert_path, admin.key_path
        )
        self._write_egress_config()
        return state

    def _write_kubeconfig(self, path: Path, server: str, cert: Path, key: Path) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": b64(self.pki.ca.cert_path),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{self.name}-admin",
                    "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                }
            ],
            "contexts": [
                {"name": self.name, "context": {"cluster": self.name, "user": f"{self.name}-admin"}}
            ],
            "current-context": self.name,
            "preferences": {},
        }
        write_atomic(path, yaml.safe_dump(config, sort_keys=False), private=True)

    @property
    def _egress_socket(self) -> Path:
        return self.state_dir / "run" / "egress-refused.sock"

    def _write_egress_config(self) -> None:
        # Defence in depth, and the only guarantee in the host-namespace fallback: every dial
        # kube-apiserver makes to the cluster network (admission and conversion webhooks,
        # aggregated APIs, pod logs/exec/port-forward via kubelets) goes through an HTTP CONNECT
        # proxy at a unix socket nobody listens on, so it fails at once and never reaches an IP.
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._egress_socket.unlink(missing_ok=True)
        config = {
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [
                {
                    "name": "cluster",
                    "connection": {
                        "proxyProtocol": "HTTPConnect",
                        "transport": {"uds": {"udsName": str(self._egress_socket)}},
                    },
                }
            ],
        }
        (self.state_dir / "egress-selector.yaml").write_text(yaml.safe_dump(config))

    def _launch(
        self,
        state: _State,
        bins: binaries.Binaries,
        deadline: float,
        progress: Callable[[str], None],
    ) -> None:
        ns_path = netns.path_of(state.netns) if state.netns else None
        inside = netns.nsenter_prefix(ns_path)
        p = state.ports
        pki = self.pki
        internal = self.state_dir / "internal"
        etcd_data = self.state_dir / "etcd"
        etcd_data.mkdir(exist_ok=True, mode=0o700)

        progress("starting etcd")
        self.daemon("etcd").start(
            [
                *inside,
                str(bins.etcd),
                "--name=sim",
                f"--data-dir={etcd_data}",
                f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                f"--initial-cluster=sim=http://127.0.0.1:{p['etcd_peer']}",
                "--unsafe-no-fsync",  # a throwaway test cluster: speed over durability on crash
                "--log-level=warn",
            ]
        )
        front_proxy = pki.client("front-proxy-client", "front-proxy-client", front_proxy=True)
        progress("starting kube-apiserver")
        self.daemon("kube-apiserver").start(
            [
                *inside,
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={pki.serving.cert_path}",
                f"--tls-private-key-file={pki.serving.key_path}",
                f"--client-ca-file={pki.ca.cert_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--egress-selector-config-file={self.state_dir / 'egress-selector.yaml'}",
                "--profiling=false",
                # The aggregation layer's front proxy (kube-aggregator -> extension API servers);
                # also lets controllers read a complete extension-apiserver-authentication map.
                f"--requestheader-client-ca-file={pki.front_proxy_ca.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert_path}",
                f"--proxy-client-key-file={front_proxy.key_path}",
            ]
        )
        if state.mode == "netns":
            progress("starting the host forwarder")
            self._start_forwarder(state, ns_path, deadline)
        progress("waiting for kube-apiserver to become ready")
        self._wait_ready(deadline)

        progress("starting kube-controller-manager and kube-scheduler")
        kcm_cfg = internal / "kube-controller-manager.kubeconfig"
        self.daemon("kube-controller-manager").start(
            [
                *inside,
                str(bins.kube_controller_manager),
                f"--kubeconfig={kcm_cfg}",
                f"--authentication-kubeconfig={kcm_cfg}",
                f"--authorization-kubeconfig={kcm_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kcm']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca.cert_path}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-signing-cert-file={pki.ca.cert_path}",
                f"--cluster-signing-key-file={pki.ca.key_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={CLUSTER_CIDR}",
                "--allocate-node-cidrs=false",
                "--profiling=false",
            ]
        )
        sched_cfg = internal / "kube-scheduler.kubeconfig"
        self.daemon("kube-scheduler").start(
            [
                *inside,
                str(bins.kube_scheduler),
                f"--kubeconfig={sched_cfg}",
                f"--authentication-kubeconfig={sched_cfg}",
                f"--authorization-kubeconfig={sched_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
            ]
        )
        kubelet = pki.client("kubelet", "kfdeploy-sim-kubelet", ("system:masters",))
        self.daemon("kubelet").start(
            [
                *inside,
                sys.executable,
                "-m",
                "kfdeploy.sim.kubelet",
                f"--server=https://127.0.0.1:{p['apiserver']}",
                f"--ca={pki.ca.cert_path}",
                f"--cert={kubelet.cert_path}",
                f"--key={kubelet.key_path}",
            ],
            env=_python_env(),
        )
        progress("waiting for kube-controller-manager and kube-scheduler")
        ns_path_or_none = ns_path
        for component, port in (
            ("kube-controller-manager", p["kcm"]),
            ("kube-scheduler", p["scheduler"]),
        ):
            self._wait_port(component, ns_path_or_none, port, deadline)

    def _start_forwarder(self, state: _State, ns_path: Path | None, deadline: float) -> None:
        """Start the forwarder; if its port was taken meanwhile, move to a fresh one.

        The port is picked free before the forwarder binds it, so another cluster starting at the
        same moment (the Magnum emulator starts several) can win the race; retrying with a new
        port and a rewritten kubeconfig is cheaper than a cross-process port registry.
        """
        ready_file = self._run_dir / "forwarder.ready"
        for _attempt in range(3):
            ready_file.unlink(missing_ok=True)
            daemon = self.daemon("forwarder")
            daemon.start(
                [
                    sys.executable,
                    "-m",
                    "kfdeploy.sim.forwarder",
                    f"--listen-port={state.host_port}",
                    f"--netns={ns_path}",
                    f"--target-port={state.ports['apiserver']}",
                    f"--ready-file={ready_file}",
                ],
                env=_python_env(),
            )
            while time.monotonic() < deadline and daemon.running():
                if ready_file.exists():
                    return
                time.sleep(0.05)
            if daemon.running():
                break  # listening never happened before the deadline: report below
            if "Address already in use" not in daemon.tail(5):
                break
            log.info("port %d was taken; moving the forwarder", state.host_port)
            state.host_port = _free_port()
            state.save(self._state_file)
            admin = self.pki.client("admin", "admin", ("system:masters",))
            self._write_kubeconfig(
                self.kubeconfig_path,
                f"https://127.0.0.1:{state.host_port}",
                admin.cert_path,
                admin.key_path,
            )
        raise SimStartError(
            f"the API forwarder did not listen on 127.0.0.1:{state.host_port}:\n"
            f"{self.daemon('forwarder').tail(10)}",
            log_dir=self.log_dir,
        )

    def _check_alive(self, components: Sequence[str]) -> None:
        for component in components:
            if not self.daemon(component).running():
                raise SimStartError(
                    f"{component} exited during start-up:\n{self.daemon(component).tail(20)}",
                    log_dir=self.log_dir,
                )

    def _wait_ready(self, deadline: float) -> None:
        """Poll /readyz through the host-side URL until it answers 200."""
        client = self.client(timeout=5)
        last = "no answer yet"
        started = [c for c in ("etcd", "kube-apiserver", "forwarder") if c in self._components()]
        while time.monotonic() < deadline:
            self._check_alive(started)
            try:
                client.request("GET", "/readyz")
                return
            except KubeApiError as exc:
                last = str(exc)
            except Exception as exc:  # connection refused/reset while it starts
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise WaitTimeout(f"kube-apiserver at {self.api_url} not ready in time (last: {last})")

    def _wait_port(self, component: str, ns_path: Path | None, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive([component])
            try:
                netns.connect(ns_path, port, timeout=1).close()
                return
            except OSError:
                time.sleep(0.25)
        raise WaitTimeout(f"{component} did not listen on 127.0.0.1:{port} in time")

    def _ensure_cluster_objects(self, deadline: float) -> None:
        """Objects a fresh cluster needs before workloads: a default StorageClass."""
        client = self.client()
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": DEFAULT_STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                "labels": {SIM_LABEL: "true"},
            },
            "provisioner": SIM_PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
        }
        last = ""
        while time.monotonic() < deadline:
            try:
                client.apply(
                    f"/apis/storage.k8s.io/v1/storageclasses/{DEFAULT_STORAGE_CLASS}",
                    storage_class,
                    "kfdeploy-sim",
                )
                return
            except KubeApiError as exc:
                last = str(exc)
                time.sleep(0.5)
        raise WaitTimeout(f"could not create the default StorageClass: {last}")


def _python_env() -> dict[str, str]:
    """Environment for our Python daemons: they must import this very kfdeploy."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _node_summary(node: dict[str, Any]) -> dict[str, Any]:
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    return {
        "name": node["metadata"]["name"],
        "ready": conds.get("Ready") == "True",
        "capacity": (node.get("status") or {}).get("capacity", {}),
        "labels": node["metadata"].get("labels", {}),
        "taints": node["spec"].get("taints", []),
    }
