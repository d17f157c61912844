"""The images a rendered platform pulls: what an air-gapped mirror must hold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kfdeploy.render.objects import RenderedObject
from kfdeploy.render.validate import pod_spec


@dataclass
class ImageRef:
    image: str
    components: set[str] = field(default_factory=set)
    where: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, object]:
        return {"image": self.image, "components": sorted(self.components), "where": sorted(self.where)}


def collect_images(objects: Iterable[RenderedObject]) -> list[ImageRef]:
    found: dict[str, ImageRef] = {}
    for ro in objects:
        ps = pod_spec(ro.obj)
        if ps is None:
            continue
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for c in ps.get(key) or []:
                img = c.get("image")
                if isinstance(img, str) and img and not any(ch in img for ch in "{}$\""):
                    ref = found.setdefault(img, ImageRef(img))
                    ref.components.add(ro.component)
                    ref.where.add(str(ro.key))
    return sorted(found.values(), key=lambda r: r.image)
