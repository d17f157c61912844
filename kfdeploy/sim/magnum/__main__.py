"""`python -m kfdeploy.sim.magnum serve|start|stop|status`: the emulator daemon.

argparse, not typer: only kfdeploy.cli imports typer, and this entry point must stay importable
without the CLI layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfdeploy.errors import KfdeployError
from kfdeploy.sim.magnum.daemon import (
    default_state_dir,
    ensure_emulator,
    running_url,
    serve,
    stop_emulator,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfdeploy.sim.magnum")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", type=Path, default=None)
        if name == "serve":
            p.add_argument("--port", type=int, default=0)
            p.add_argument("--config", type=Path, default=None)
        if name == "stop":
            p.add_argument(
                "--destroy",
                action="store_true",
                help="also delete every emulated cluster (its control plane)",
            )
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    try:
        if args.command == "serve":
            state_dir.mkdir(parents=True, exist_ok=True)
            serve(state_dir, args.port, args.config)
        elif args.command == "start":
            print(ensure_emulator(state_dir))
        elif args.command == "stop":
            print("stopped" if stop_emulator(state_dir, destroy=args.destroy) else "not running")
        else:
            url = running_url(state_dir)
            print(
                json.dumps(
                    {
                        "running": bool(url),
                        "url": url,
                        "state_dir": str(state_dir),
                        "clouds_yaml": str(state_dir / "clouds.yaml"),
                    }
                )
            )
    except KfdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
