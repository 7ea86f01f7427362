"""ModelPilot: progressive delivery and monitoring of Triton models on Kubernetes."""

__version__ = "0.1.0"
