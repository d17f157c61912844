"""Console-script entry point: a warm `kfdeploy render` is answered from its memo before the rest
of kfdeploy is imported (see kfdeploy.render.memo); everything else goes to kfdeploy.cli."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["render"]:
        from kfdeploy.render.memo import fast_render

        try:
            code = fast_render(sys.argv[2:])
        except Exception:  # the full CLI does the same work and reports properly
            code = None
        if code is not None:
            sys.exit(code)
    from kfdeploy.cli import main as full

    full()
