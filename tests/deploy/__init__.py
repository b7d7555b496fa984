"""Deployment: docker/, Kubernetes manifests, and the CLI commands a container runs."""
