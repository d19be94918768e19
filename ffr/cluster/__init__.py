"""Helpers for running ffr on a Ray cluster: bind-address rules, the head's MLflow server, job runtime envs,
secret scrubbing, and a throwaway loopback head for rehearsing ``ray job submit``. See docs/cluster.md.

Nothing here imports Ray: these run on the submitting laptop and on the head before Ray starts.
"""
