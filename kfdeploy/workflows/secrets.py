"""Put secret values into the rendered objects at the last moment before apply.

Rendered output carries only placeholders (`kfdeploy-secret:<name>`); values are read here, from
the environment's sources, and go straight to the API server. They are never written to disk,
the journal or a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kfdeploy.config.model import Environment
from kfdeploy.render.objects import RenderedObject

if TYPE_CHECKING:
    from kfdeploy.cluster.client import Kube


def with_secrets(
    kube: Kube,
    env: Environment,
    objects: Sequence[RenderedObject],
    *,
    env_file: str | None = None,
    dry_run: bool = False,
) -> list[RenderedObject]:
    from kfdeploy.render.secrets import generate_value, placeholders_in, resolve_secrets

    raw = [o.obj for o in objects]
    if not placeholders_in(raw):
        return list(objects)
    from kfdeploy.cluster.secret_store import ClusterGeneratedSecrets

    store = ClusterGeneratedSecrets(kube, env.name, generate_value, dry_run=dry_run)
    resolved = resolve_secrets(raw, env, store, env_file=env_file)
    return [RenderedObject(o.component, r) for o, r in zip(objects, resolved, strict=True)]
