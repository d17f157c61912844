"""kfdeploy: deploy and keep the Kubeflow ML platform on OpenStack Magnum and other clusters."""

__version__ = "0.1.0"
