"""Run a command (typically the test suite) inside a loopback-only network namespace.

`python -m kfdeploy.sim.isolate -- pytest -m integration` (or `kfdeploy sim isolate -- ...`)
puts the whole command, and every process it starts, where any dial to a non-loopback address
fails at once with ENETUNREACH. Simulated clusters started from inside still work: their own
namespaces are created as usual and their forwarders listen on the isolated 127.0.0.1.

It uses `nsenter --net` and not `ip netns exec`, because the latter also enters a new mount
namespace, and the /run/netns mounts of clusters made inside would then outlive their deletion
on the host.
"""

from __future__ import annotations

import os
import shutil
import sys

from kfdeploy.sim import netns

ISOLATED_NETNS = "kfdeploy-isolated"


def exec_isolated(argv: list[str], *, required: bool = False) -> None:
    """Replace this process with `argv` run inside the isolated namespace (never returns).

    Without the privileges for a namespace the command runs unisolated with a warning, unless
    `required`, in which case this exits with status 4.
    """
    if not argv:
        print("isolate: no command given", file=sys.stderr)
        sys.exit(2)
    program = shutil.which(argv[0]) or argv[0]
    reason = netns.unavailable_reason()
    path = None
    if reason is None:
        try:
            path = netns.ensure(ISOLATED_NETNS)
        except netns.NetnsError as exc:
            reason = str(exc)
    if path is None:
        if required:
            print(f"isolate: cannot isolate the command: {reason}", file=sys.stderr)
            sys.exit(4)
        print(f"isolate: WARNING running without network isolation: {reason}", file=sys.stderr)
        os.execv(program, argv)
        return  # only reached when execv is replaced (tests)
    prefix = netns.nsenter_prefix(path)
    print(f"isolate: running in loopback-only network namespace {path}", file=sys.stderr)
    os.execv(prefix[0], [*prefix, program, *argv[1:]])


def main() -> None:
    args = sys.argv[1:]
    required = False
    if args and args[0] == "--required":
        required, args = True, args[1:]
    if args and args[0] == "--":
        args = args[1:]
    exec_isolated(args, required=required)


if __name__ == "__main__":
    main()
