"""trainhub: Azure ML v1's Estimator workflow as a self-hosted service on your own GPU servers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
