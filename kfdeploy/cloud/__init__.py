"""Cloud providers: what creates and keeps the Kubernetes cluster an environment runs on.

`kfdeploy.cloud.provider` is the interface the rest of kfdeploy uses; `plan` is the pure
planning core; `magnum/` (OpenStack Magnum through openstacksdk) and `kubeconfig_provider`
(an existing cluster) implement it. Only the adapters under `magnum/` import openstack.
"""
