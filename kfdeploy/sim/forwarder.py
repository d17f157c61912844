"""Forward host 127.0.0.1:PORT to the API server inside the control plane's network namespace.

Run as a daemon: `python -m kfdeploy.sim.forwarder --listen-port P --netns PATH --target-port T`.
It binds its listening socket in the host namespace first, then joins the namespace, so every
connection it accepts from the host is dialled to 127.0.0.1:T inside. Bytes pass untouched (TLS
ends at kube-apiserver, whose certificate covers 127.0.0.1), and both ends are loopback: the
forwarder cannot carry traffic anywhere else because it has no other target.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from kfdeploy.sim import netns

log = logging.getLogger("kfdeploy.sim.forwarder")
_BUF = 64 * 1024


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_BUF)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Half-close so the other direction can finish (HTTP/2 and watches keep both open).
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, target_port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
    except OSError as exc:
        log.warning("cannot reach 127.0.0.1:%d in the namespace: %s", target_port, exc)
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(
    listen_port: int, netns_path: Path | None, target_port: int, ready_file: Path | None = None
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(128)
    if ready_file is not None:
        # Tells the starter that *this* process owns the port (a connect test cannot: another
        # program may be listening there).
        ready_file.write_text(str(listen_port))
    if netns_path is not None:
        # After this, new sockets (the upstream dials) are created inside the namespace;
        # the listener stays in the host namespace where it was opened.
        netns.enter(netns_path)
    log.info(
        "forwarding 127.0.0.1:%d -> [netns %s] 127.0.0.1:%d", listen_port, netns_path, target_port
    )
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(client, target_port), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kfdeploy.sim.forwarder")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--netns", type=Path, default=None)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.listen_port, args.netns, args.target_port, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
