"""Running pipelines: on a laptop with kfp.local (``local``), or on a Kubeflow Pipelines server (``kfp_api``)."""
