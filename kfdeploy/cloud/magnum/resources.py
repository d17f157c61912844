"""openstacksdk resource types Magnum has and openstacksdk lacks."""

from __future__ import annotations

from openstack import resource


class NodeGroup(resource.Resource):  # type: ignore[misc]
    """A Magnum nodegroup (API 1.9+): `/v1/clusters/{cluster_id}/nodegroups/{id}`.

    Updates go through explicit JSON-patch requests in `MagnumClient`, not `commit()`: Magnum only
    accepts replace operations on /min_node_count and /max_node_count.
    """

    resources_key = "nodegroups"
    base_path = "/clusters/%(cluster_id)s/nodegroups"

    allow_create = True
    allow_fetch = True
    allow_commit = True
    allow_delete = True
    allow_list = True
    commit_method = "PATCH"

    _query_mapping = resource.QueryParameters("role", "limit", "marker", "sort_key", "sort_dir")

    cluster_id = resource.URI("cluster_id")

    name = resource.Body("name")
    uuid = resource.Body("uuid", alternate_id=True)
    flavor_id = resource.Body("flavor_id")
    image_id = resource.Body("image_id")
    node_count = resource.Body("node_count", type=int)
    min_node_count = resource.Body("min_node_count", type=int)
    max_node_count = resource.Body("max_node_count", type=int)
    role = resource.Body("role")
    is_default = resource.Body("is_default", type=bool)
    labels = resource.Body("labels", type=dict)
    merge_labels = resource.Body("merge_labels", type=bool)
    node_addresses = resource.Body("node_addresses", type=list)
    docker_volume_size = resource.Body("docker_volume_size", type=int)
    status = resource.Body("status")
    status_reason = resource.Body("status_reason")
    stack_id = resource.Body("stack_id")
    version = resource.Body("version")
    project_id = resource.Body("project_id")
    created_at = resource.Body("created_at")
    updated_at = resource.Body("updated_at")
