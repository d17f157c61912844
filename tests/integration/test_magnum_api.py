"""Real openstacksdk over HTTP against the Keystone + Magnum emulator (no control planes: the
"fake" backend), covering Magnum's protocol and openstacksdk's defects kfdeploy works around.

Each defect test shows the plain SDK failing against a Magnum-faithful server, and kfdeploy's
client succeeding, so removing a workaround makes a test fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from openstack import exceptions as osx

from kfdeploy.cloud.magnum.client import (
    VERSION_VALUE,
    MagnumClient,
    connect,
    load_region,
    new_connection,
)
from kfdeploy.cloud.magnum.provider import MagnumProvider
from kfdeploy.cloud.magnum.waits import WaitSettings
from kfdeploy.config.load import load_environment
from kfdeploy.errors import CloudError
from kfdeploy.sim.magnum.config import LOCAL_CLOUD
from kfdeploy.sim.magnum.server import Emulator, running
from kfdeploy.sim.magnum.testing import (
    fast_config,
    magnum_requests,
    staging_environment,
    write_environment,
)

pytestmark = [
    pytest.mark.integration,
    # openstacksdk warns about its own internal calls (see kfdeploy.cloud.magnum.client); tests
    # that use the plain SDK directly meet them too.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

FAST = WaitSettings(poll=0.2, poll_max=1)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running(fast_config(tmp_path_factory.mktemp("magnum-api"))) as em:
        em.write_clouds_yaml(em.config.state_dir / "clouds.yaml")
        yield em


@pytest.fixture
def clouds(emulator: Emulator) -> Path:
    return emulator.config.state_dir / "clouds.yaml"


def sdk_proxy(clouds: Path, cloud: str = LOCAL_CLOUD) -> Any:
    return new_connection(load_region(cloud, clouds)).container_infrastructure_management


def token(emulator: Emulator) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "kfdeploy",
                        "domain": {"name": "Default"},
                        "password": "kfdeploy-local-password",
                    }
                },
            },
            "scope": {"project": {"name": "kfdeploy", "domain": {"name": "Default"}}},
        }
    }
    r = requests.post(f"{emulator.auth_url}/auth/tokens", json=body, timeout=5)
    assert r.status_code == 201
    return str(r.headers["X-Subject-Token"])


def ready_cluster(emulator: Emulator, clouds: Path, name: str) -> str:
    client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
    found = client.templates_named("api-template")
    tmpl = (
        found[0]["uuid"]
        if found
        else client.create_template(
            {"name": "api-template", "coe": "kubernetes", "image_id": "fedora-coreos-40"}
        )
    )
    uuid = client.create_cluster(
        {
            "name": name,
            "cluster_template_id": tmpl,
            "node_count": 2,
            "master_count": 1,
            "flavor_id": "m2.xlarge",
            "master_flavor_id": "m2.medium",
        }
    )
    deadline = time.monotonic() + 20
    while client.get_cluster(uuid)["status"] != "CREATE_COMPLETE":
        assert time.monotonic() < deadline, "emulated cluster never completed"
        time.sleep(0.2)
    return uuid


# ---- protocol --------------------------------------------------------------------------------


def test_version_discovery_needs_no_token(emulator: Emulator) -> None:
    root = requests.get(f"{emulator.url}/magnum/", timeout=5).json()
    assert root["versions"][0]["id"] == "v1"
    assert root["versions"][0]["min_version"] == "1.1"
    v1 = requests.get(f"{emulator.url}/magnum/v1", timeout=5)
    assert v1.status_code == 200 and v1.json()["id"] == "v1"
    assert requests.get(f"{emulator.url}/magnum/v1/clusters", timeout=5).status_code == 401


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 406),  # no header: Magnum assumes 1.1, nodegroups need 1.9
        ("container-infrastructure-management 1.10", 406),  # official name: ignored before 22.0
        ("container-infra 1.10", 404),  # accepted; the cluster does not exist
        ("container-infra 1.99", 406),  # out of range
    ],
)
def test_microversion_negotiation(emulator: Emulator, header: str | None, status: int) -> None:
    headers = {"X-Auth-Token": token(emulator)}
    if header:
        headers["OpenStack-API-Version"] = header
    r = requests.get(f"{emulator.magnum_url}/clusters/nope/nodegroups", headers=headers, timeout=5)
    assert r.status_code == status
    error = r.json()["errors"][0]
    assert error["status"] == status
    if header == "container-infra 1.99":
        assert error["code"] == "magnum.microversion-unsupported"
        assert (error["min_version"], error["max_version"]) == ("1.1", "1.12")


def test_error_bodies_and_codes(emulator: Emulator, clouds: Path) -> None:
    uuid = ready_cluster(emulator, clouds, "errors")
    headers = {"X-Auth-Token": token(emulator), "OpenStack-API-Version": VERSION_VALUE}
    base = f"{emulator.magnum_url}/clusters/{uuid}"

    def post(path: str, body: Any) -> requests.Response:
        return requests.post(f"{base}{path}", json=body, headers=headers, timeout=5)

    dup = post("/nodegroups", {"name": "default-worker", "flavor_id": "m2.xlarge"})
    assert dup.status_code == 409 and "already exists" in dup.json()["errors"][0]["detail"]
    master = post("/nodegroups", {"name": "m2", "role": "master"})
    assert master.status_code == 400
    bounds = post("/actions/resize", {"node_count": 99, "nodegroup": "default-worker"})
    assert bounds.status_code in (202, 400)  # default-worker has no max unless labelled
    delete_default = requests.delete(
        f"{base}/nodegroups/default-worker", headers=headers, timeout=5
    )
    assert delete_default.status_code == 400
    missing = requests.get(f"{emulator.magnum_url}/clusters/nope", headers=headers, timeout=5)
    assert missing.status_code == 404
    assert set(missing.json()["errors"][0]) >= {
        "request_id",
        "code",
        "status",
        "title",
        "detail",
        "links",
    }


def test_application_credentials_authenticate(clouds: Path) -> None:
    client = MagnumClient(connect(f"{LOCAL_CLOUD}-appcred", clouds), f"{LOCAL_CLOUD}-appcred")
    assert isinstance(client.templates_named("anything"), list)


def test_wrong_password_is_a_clear_error(tmp_path: Path, clouds: Path) -> None:
    bad = tmp_path / "clouds.yaml"
    bad.write_text(clouds.read_text().replace("kfdeploy-local-password", "wrong-password"))
    with pytest.raises(CloudError, match="authentication to cloud 'kfdeploy-local' failed"):
        MagnumClient(connect(LOCAL_CLOUD, bad), LOCAL_CLOUD).templates_named("x")


# ---- openstacksdk defects --------------------------------------------------------------------


def test_sdk_sends_no_microversion_without_our_header(emulator: Emulator, clouds: Path) -> None:
    uuid = ready_cluster(emulator, clouds, "no-header")
    plain = sdk_proxy(clouds)
    assert plain.get(f"/clusters/{uuid}/nodegroups").status_code == 406
    client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
    assert {g["name"] for g in client.nodegroups(uuid)} == {"default-master", "default-worker"}


def test_sdk_cluster_resize_is_broken_ours_works(emulator: Emulator, clouds: Path) -> None:
    uuid = ready_cluster(emulator, clouds, "resize-defect")
    proxy = sdk_proxy(clouds)
    proxy.additional_headers["OpenStack-API-Version"] = VERSION_VALUE  # even with the header
    cluster = proxy.get_cluster(uuid)
    with pytest.raises(TypeError):  # it indexes a requests.Response like a dict
        cluster.resize(proxy, node_count=3)
    client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
    deadline = time.monotonic() + 20
    while client.get_cluster(uuid)["status"].endswith("IN_PROGRESS"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client.resize(uuid, "default-worker", 1)
    assert client.get_nodegroup(uuid, "default-worker")["node_count"] == 1  # type: ignore[index]


def test_sdk_update_cluster_by_id_is_refused(emulator: Emulator, clouds: Path) -> None:
    uuid = ready_cluster(emulator, clouds, "update-defect")
    proxy = sdk_proxy(clouds)
    proxy.additional_headers["OpenStack-API-Version"] = VERSION_VALUE
    with pytest.raises(osx.BadRequestException):
        proxy.update_cluster(uuid, node_count=3)  # a JSON-patch Magnum refuses
    # With a fetched Cluster the SDK diffs real state and sends a plain replace.
    proxy.update_cluster(proxy.get_cluster(uuid), node_count=3)
    client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
    assert client.get_nodegroup(uuid, "default-worker")["node_count"] == 3  # type: ignore[index]


def test_sdk_errors_lack_magnum_detail_ours_carry_it(emulator: Emulator, clouds: Path) -> None:
    proxy = sdk_proxy(clouds)
    proxy.additional_headers["OpenStack-API-Version"] = VERSION_VALUE
    with pytest.raises(osx.HttpException) as exc:
        proxy.create_cluster(name="x", cluster_template_id="no-such-template")
    assert "could not be found" not in str(exc.value)
    client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
    with pytest.raises(CloudError, match="ClusterTemplate no-such-template could not be found"):
        client.create_cluster({"name": "x", "cluster_template_id": "no-such-template"})


def test_status_reason_and_faults_come_from_the_raw_body(emulator: Emulator, clouds: Path) -> None:
    emulator.faults.update({"fail_clusters": {"doomed": "No valid host was found"}})
    try:
        client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
        tmpl = client.templates_named("api-template") or [
            {
                "uuid": client.create_template(
                    {"name": "api-template", "coe": "kubernetes", "image_id": "img"}
                )
            }
        ]
        uuid = client.create_cluster({"name": "doomed", "cluster_template_id": tmpl[0]["uuid"]})
        deadline = time.monotonic() + 20
        while (raw := client.get_cluster(uuid))["status"] == "CREATE_IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert raw["status"] == "CREATE_FAILED"
        assert "No valid host was found" in raw["status_reason"]
        assert raw["faults"]["default-worker"] == "No valid host was found"
        client.delete_cluster(uuid)
    finally:
        emulator.faults.update({"reset": True})


# ---- every Magnum request carries the microversion; token expiry ----------------------------


def test_full_cycle_sends_microversion_and_survives_token_expiry(
    emulator: Emulator, tmp_path: Path
) -> None:
    clouds = emulator.config.state_dir / "clouds.yaml"
    env_file = write_environment(tmp_path, "hdr", staging_environment(LOCAL_CLOUD, name="hdr"))
    env = load_environment(str(env_file)).env
    provider = MagnumProvider(env, clouds_file=clouds, waits=FAST)
    emulator.reset_requests()
    auth_before = 0

    def progress(message: str) -> None:
        # Revoke every token while kfdeploy waits for the cluster: keystoneauth must
        # re-authenticate on the 401 and the wait must carry on.
        if "CREATE_IN_PROGRESS" in message and "cluster" in message:
            emulator.expire_tokens()

    provider.apply(provider.plan(env), progress)
    provider.status(env)
    provider.kubeconfig(env, tmp_path / "kubeconfig")
    assert provider.plan(env).is_noop
    provider.delete(env)
    api = [r for r in magnum_requests(emulator) if r["path"] not in ("/magnum", "/magnum/v1")]
    assert api, "no Magnum requests recorded"
    assert {r["microversion"] for r in api} == {VERSION_VALUE}
    auths = sum(
        r["count"]
        for r in emulator.requests()
        if r["method"] == "POST" and r["path"] == "/identity/v3/auth/tokens"
    )
    assert auths >= auth_before + 2  # the first token, and the re-authentication
    assert any(r["count"] > 0 for r in api if r["method"] == "DELETE")


# ---- provider behaviour that needs no real nodes ---------------------------------------------


def test_dropped_202_is_detected_and_reissued(emulator: Emulator, tmp_path: Path) -> None:
    clouds = emulator.config.state_dir / "clouds.yaml"
    data = staging_environment(LOCAL_CLOUD, name="drops", nodegroups=[])
    env = load_environment(str(write_environment(tmp_path, "drops", data))).env
    provider = MagnumProvider(env, clouds_file=clouds, waits=FAST)
    provider.apply(provider.plan(env))
    bigger = dict(data)
    bigger["cluster"] = {
        **data["cluster"],
        "workers": {
            "name": "default-worker",
            "flavor": "m2.xlarge",
            "count": 5,
            "min": 1,
            "max": 6,
        },
    }
    env5 = load_environment(str(write_environment(tmp_path, "drops", bigger))).env
    provider5 = MagnumProvider(env5, clouds_file=clouds, waits=FAST)
    emulator.faults.update({"drop_actions": 1})
    emulator.reset_requests()
    try:
        provider5.apply(provider5.plan(env5))
    finally:
        emulator.faults.update({"reset": True})
    resizes = [r for r in magnum_requests(emulator) if r["path"].endswith("/actions/resize")]
    assert sum(r["count"] for r in resizes) == 2  # the dropped one, and the re-issued one
    assert provider5.plan(env5).is_noop
    provider5.delete(env5)


def test_failed_nodegroup_on_existing_cluster_rolls_back_only_the_nodegroup(
    emulator: Emulator, tmp_path: Path
) -> None:
    clouds = emulator.config.state_dir / "clouds.yaml"
    bare = staging_environment(LOCAL_CLOUD, name="keepme", nodegroups=[])
    env = load_environment(str(write_environment(tmp_path, "keep", bare))).env
    MagnumProvider(env, clouds_file=clouds, waits=FAST).apply(
        MagnumProvider(env, clouds_file=clouds, waits=FAST).plan(env)
    )
    full = load_environment(
        str(write_environment(tmp_path, "keep", staging_environment(LOCAL_CLOUD, name="keepme")))
    ).env
    provider = MagnumProvider(full, clouds_file=clouds, waits=FAST)
    emulator.faults.update({"fail_nodegroups": {"gpu-a100": "No valid host was found"}})
    try:
        with pytest.raises(CloudError) as exc:
            provider.apply(provider.plan(full))
    finally:
        emulator.faults.update({"reset": True})
    assert "No valid host was found" in exc.value.message
    assert exc.value.message.endswith("rolled back: nodegroup gpu-a100")
    status = provider.status(full)
    assert status.exists and {g.name for g in status.nodegroups} == {
        "default-master",
        "default-worker",
    }
    assert status.status == "UPDATE_COMPLETE"
    provider.delete(full)


def test_nodegroup_waits_for_the_cluster_api_address(emulator: Emulator, tmp_path: Path) -> None:
    clouds = emulator.config.state_dir / "clouds.yaml"
    data = staging_environment(LOCAL_CLOUD, name="early")
    data["cluster"]["template"]["name"] = "early-template"
    env = load_environment(str(write_environment(tmp_path, "early", data))).env
    provider = MagnumProvider(env, clouds_file=clouds, waits=FAST)
    client = provider.client
    tmpl = client.create_template(
        {"name": "early-template", "coe": "kubernetes", "image_id": "fedora-coreos-40"}
    )
    uuid = client.create_cluster(
        {
            "name": "early",
            "cluster_template_id": tmpl,
            "node_count": 3,
            "master_count": 3,
            "flavor_id": "m2.xlarge",
            "master_flavor_id": "m2.medium",
            "labels": {"min_node_count": "1", "max_node_count": "6"},
        }
    )
    # Magnum refuses nodegroups until the cluster has an API address ...
    headers = {"X-Auth-Token": token(emulator), "OpenStack-API-Version": VERSION_VALUE}
    early = requests.post(
        f"{emulator.magnum_url}/clusters/{uuid}/nodegroups",
        headers=headers,
        json={"name": "gpu-a100", "flavor_id": "g1.a100.x2"},
        timeout=5,
    )
    assert early.status_code == 409
    assert early.json()["errors"][0]["detail"] == "Cluster API address is not available yet"
    # ... so kfdeploy, finding the cluster still being created, waits and then adds it.
    plan = provider.plan(env)
    assert [c.action for c in plan.changes] == ["create-nodegroup"]
    provider.apply(plan)
    assert {g.name for g in provider.status(env).nodegroups} >= {"gpu-a100"}
    provider.delete(env)
    client.delete_template(tmpl)


def test_short_lived_tokens_are_renewed(tmp_path: Path) -> None:
    with running(fast_config(tmp_path / "ttl", token_ttl=2)) as em:
        clouds = em.write_clouds_yaml(tmp_path / "clouds.yaml")
        client = MagnumClient(connect(LOCAL_CLOUD, clouds), LOCAL_CLOUD)
        client.templates_named("x")
        time.sleep(2.5)  # the first token has expired: the next call must get a new one
        client.templates_named("x")
        auths = sum(
            r["count"]
            for r in em.requests()
            if r["method"] == "POST" and r["path"] == "/identity/v3/auth/tokens"
        )
    assert auths >= 2
