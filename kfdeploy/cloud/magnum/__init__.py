"""OpenStack Magnum provider (openstacksdk). The only place kfdeploy imports `openstack`."""
