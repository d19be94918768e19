"""Helpers for running ffr on a Ray cluster: bind-address rules, the head's MLflow server, job runtime envs,
secret scrubbing, and a throwaway loopback head for rehearsing ``ray job submit``. See docs/cluster.md.

No module here imports Ray at import time: they run on the submitting laptop and on the head before Ray
starts (ffr.cluster.check imports Ray's config validator only when it runs).
"""
