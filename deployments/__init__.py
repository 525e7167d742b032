"""Deployments: ``python -m deployments.serve`` serves prefect.yaml's deployments locally."""
