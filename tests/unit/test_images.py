"""Image references: parsing, mirroring, and finding them wherever upstream names them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kfdeploy.config.model import RegistryMirrorOverlay
from kfdeploy.errors import ConfigError
from kfdeploy.render import images
from kfdeploy.render.images import ImageName, collect_images, mirror_hub, mirror_reference
from kfdeploy.render.objects import RenderedObject
from kfdeploy.render.overlays import mirror_objects

PREFIX = "registry.cern.ch/kubeflow"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("busybox:1.28", ("docker.io", "library/busybox", "1.28", "")),
        ("kserve/agent:v0.16.0", ("docker.io", "kserve/agent", "v0.16.0", "")),
        ("docker.io/alpine/k8s:1.32.3", ("docker.io", "alpine/k8s", "1.32.3", "")),
        ("gcr.io/istio-release/proxyv2:1.28.0", ("gcr.io", "istio-release/proxyv2", "1.28.0", "")),
        ("localhost:5000/x/y", ("localhost:5000", "x/y", "", "")),
        (
            "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:" + "a" * 64,
            ("gcr.io", "knative-releases/knative.dev/serving/cmd/queue", "", "sha256:" + "a" * 64),
        ),
        ("ghcr.io/containerd/busybox", ("ghcr.io", "containerd/busybox", "", "")),
    ],
)
def test_parse(ref: str, expected: tuple[str, str, str, str]) -> None:
    n = ImageName.parse(ref)
    assert (n.registry, n.path, n.tag, n.digest) == expected


@pytest.mark.parametrize(
    ("ref", "keep", "expected"),
    [
        ("busybox:1.28", False, f"{PREFIX}/library/busybox:1.28"),
        ("busybox:1.28", True, f"{PREFIX}/docker.io/library/busybox:1.28"),
        ("gcr.io/istio-release/proxyv2:1.28.0", False, f"{PREFIX}/istio-release/proxyv2:1.28.0"),
        (
            "gcr.io/istio-release/proxyv2:1.28.0",
            True,
            f"{PREFIX}/gcr.io/istio-release/proxyv2:1.28.0",
        ),
        ("x.io/a/b@sha256:" + "0" * 64, False, f"{PREFIX}/a/b@sha256:" + "0" * 64),
        # already mirrored: unchanged (transform may run on its own output)
        (f"{PREFIX}/a/b:1", False, f"{PREFIX}/a/b:1"),
    ],
)
def test_mirror_reference(ref: str, keep: bool, expected: str) -> None:
    assert mirror_reference(ref, PREFIX, keep) == expected


def test_mirror_hub_matches_composed_image() -> None:
    # Istio composes <hub>/<image>:<tag>; the mirrored hub must compose the mirrored image.
    hub = mirror_hub("gcr.io/istio-release", PREFIX, True)
    assert f"{hub}/proxyv2:1.28.0" == mirror_reference(
        "gcr.io/istio-release/proxyv2:1.28.0", PREFIX, True
    )


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "ml-pipeline",
            "namespace": "kubeflow",
            "annotations": {"note": "image: a/b:1"},
        },
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [{"name": "i", "image": "busybox:1.28"}],
                    "containers": [
                        {
                            "name": "api",
                            "image": "ghcr.io/kubeflow/kfp-api-server:2.16.0",
                            "args": [
                                "--executor-image",
                                "quay.io/argoproj/argoexec:v3.7.3",
                                "--acme-http01-solver-image=quay.io/jetstack/acmesolver:v1",
                            ],
                            "env": [
                                {
                                    "name": "V2_DRIVER_IMAGE",
                                    "value": "ghcr.io/kubeflow/kfp-driver:2.16.0",
                                },
                                {"name": "IMAGE_PULL_POLICY", "value": "IfNotPresent"},
                                {"name": "VERSION", "value": "2.16.0"},
                                {"name": "TEMPLATED_IMAGE", "value": "$(REGISTRY)/x:1"},
                            ],
                        }
                    ],
                }
            }
        },
    }


KATIB_CONFIG = """\
runtime:
  metricsCollectors:
  - kind: File
    image: ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0
  suggestions:
  - algorithmName: random
    image: ghcr.io/kubeflow/katib/suggestion-hyperopt:v0.19.0
    imagePullPolicy: IfNotPresent
"""

KSERVE_AGENT = '{\n    "image" : "kserve/agent:v0.16.0",\n    "memoryRequest": "100Mi"\n}'

ISTIO_VALUES = json.dumps(
    {
        "global": {
            "hub": "gcr.io/istio-release",
            "tag": "1.29.0",
            "proxy": {"image": "proxyv2"},
            "proxy_init": {"image": "proxyv2"},
        }
    }
)

ISTIO_TEMPLATE = """\
containers:
- name: istio-proxy
  image: "{{ annotation .ObjectMeta `sidecar.istio.io/proxyImage` .Values.global.proxy.image }}"
- name: enable-core-dump
  image: busybox:1.28
"""

SPAWNER = """\
spawnerFormDefaults:
  image:
    value: ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0
    options:
    - ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0
    - ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-pytorch-full:v1.10.0
  allowCustomImage: true
  imagePullPolicy:
    value: IfNotPresent
  cpu:
    options:
    - "0.5"
"""


def _configmaps() -> list[dict[str, Any]]:
    def cm(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns"},
            "data": data,
        }

    return [
        cm("katib-config", {"katib-config.yaml": KATIB_CONFIG}),
        cm(
            "inferenceservice-config",
            {"agent": KSERVE_AGENT, "_example": '"image" : "kserve/old:1"'},
        ),
        cm("istio-sidecar-injector", {"values": ISTIO_VALUES, "config": ISTIO_TEMPLATE}),
        cm(
            "config-deployment",
            {"queue-sidecar-image": "gcr.io/knative-releases/queue@sha256:" + "b" * 64},
        ),
        cm(
            "pipeline-install-config",
            {"cacheImage": "ghcr.io/containerd/busybox", "appName": "pipeline"},
        ),
        cm("jupyter-web-app-config", {"spawner_ui_config.yaml": SPAWNER}),
        cm("tensorboard-config", {"TENSORBOARD_IMAGE": "tensorflow/tensorflow:2.5.1"}),
    ]


def _crs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ClusterServingRuntime",
            "metadata": {"name": "sk"},
            "spec": {"containers": [{"name": "c", "image": "kserve/sklearnserver:v0.16.0"}]},
        },
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "x"},
            "spec": {"versions": [{"schema": {"image": "not/an-image:1"}}]},
        },
    ]


EXPECTED = {
    "busybox:1.28",
    "ghcr.io/kubeflow/kfp-api-server:2.16.0",
    "quay.io/argoproj/argoexec:v3.7.3",
    "quay.io/jetstack/acmesolver:v1",
    "ghcr.io/kubeflow/kfp-driver:2.16.0",
    "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0",
    "ghcr.io/kubeflow/katib/suggestion-hyperopt:v0.19.0",
    "kserve/agent:v0.16.0",
    "gcr.io/istio-release/proxyv2:1.29.0",
    "gcr.io/knative-releases/queue@sha256:" + "b" * 64,
    "ghcr.io/containerd/busybox",
    "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0",
    "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-pytorch-full:v1.10.0",
    "tensorflow/tensorflow:2.5.1",
    "kserve/sklearnserver:v0.16.0",
}


def _objects() -> list[dict[str, Any]]:
    return [_deployment(), *_configmaps(), *_crs()]


def test_collect_finds_every_site_and_nothing_else() -> None:
    refs = collect_images([RenderedObject("c", o) for o in _objects()])
    assert {r.image for r in refs} == EXPECTED
    # Without a mirror, source == image.
    assert all(r.source == r.image for r in refs)
    where = {r.image: r.where for r in refs}
    assert any("V2_DRIVER_IMAGE" in w for w in where["ghcr.io/kubeflow/kfp-driver:2.16.0"])
    assert any("hub" in w for w in where["gcr.io/istio-release/proxyv2:1.29.0"])


def test_collect_does_not_modify_objects() -> None:
    objs = _objects()
    before = copy.deepcopy(objs)
    collect_images([RenderedObject("c", o) for o in objs])
    assert objs == before


@pytest.mark.parametrize("keep", [False, True])
def test_mirror_rewrites_every_site_and_records_sources(keep: bool) -> None:
    objs = _objects()
    mirror_objects(objs, RegistryMirrorOverlay(prefix=PREFIX, keep_registry_host=keep))
    refs = collect_images([RenderedObject("c", o) for o in objs])
    assert {r.source for r in refs} == EXPECTED
    for r in refs:
        assert r.image == mirror_reference(r.source, PREFIX, keep), r
    text = json.dumps(objs)
    # templated and non-image strings untouched
    assert "{{ annotation .ObjectMeta" in text
    assert '"IfNotPresent"' in text and "$(REGISTRY)/x:1" in text
    assert '"image": "proxyv2"' in json.loads(json.dumps(objs[3]))["data"]["values"]
    # documentation blocks and annotations are not rewritten
    assert '"image" : "kserve/old:1"' in objs[2]["data"]["_example"]
    assert objs[0]["metadata"]["annotations"]["note"] == "image: a/b:1"
    # the CRD schema's `image` is not an image
    assert objs[-1]["spec"]["versions"][0]["schema"]["image"] == "not/an-image:1"
    # the hub moved to the mirror, so the injected sidecar is pulled from it
    hub = json.loads(objs[3]["data"]["values"])["global"]["hub"]
    assert hub == mirror_hub("gcr.io/istio-release", PREFIX, keep)


def test_mirror_is_idempotent() -> None:
    objs = _objects()
    m = RegistryMirrorOverlay(prefix=PREFIX)
    mirror_objects(objs, m)
    once = copy.deepcopy(objs)
    mirror_objects(objs, m)
    assert objs == once


def test_mirror_collision_without_registry_host_is_refused() -> None:
    objs = [
        {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "ghcr.io/kubeflow/x:1"},
                    {"name": "b", "image": "docker.io/kubeflow/x:1"},
                ]
            },
        }
    ]
    with pytest.raises(ConfigError, match="keep_registry_host"):
        mirror_objects(objs, RegistryMirrorOverlay(prefix=PREFIX))
    mirror_objects(objs, RegistryMirrorOverlay(prefix=PREFIX, keep_registry_host=True))


def test_source_annotation_is_json_mapping() -> None:
    objs = [_deployment()]
    mirror_objects(objs, RegistryMirrorOverlay(prefix=PREFIX))
    mapping = images.source_map(objs[0])
    assert (
        mapping[f"{PREFIX}/kubeflow/kfp-api-server:2.16.0"]
        == "ghcr.io/kubeflow/kfp-api-server:2.16.0"
    )
    assert objs[0]["metadata"]["annotations"]["note"] == "image: a/b:1"
