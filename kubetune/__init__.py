"""kubetune: Kubeflow Pipelines components and pipelines for LLM fine-tuning."""

__version__ = "0.1.0"
