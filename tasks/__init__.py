"""Thin Prefect ``@task`` wrappers: S3 batches (:mod:`.s3`) and the CPU stage (:mod:`.cpu`)."""
