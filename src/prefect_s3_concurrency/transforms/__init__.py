"""Transforms of the pipeline: the registry, the squaring kernel, planning and resume."""
