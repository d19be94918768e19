"""Build the ``--runtime-env-json`` for ``ray job submit`` from configs/runtime-env.yaml plus the submitting shell.

``python -m ffr.cluster.runtime_env configs/runtime-env.yaml [NAME=value ...]`` prints the JSON. Endpoint and
tracking-URI variables set in the shell are copied in; anything that looks like a credential is refused, because
Ray shows a job's runtime env to everyone who can list jobs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from ffr.config import read_yaml_mapping
from ffr.errors import FFRError
from ffr.secrets import has_url_credentials, is_secret_name

# Copied from the submitting shell when set: where S3 and MLflow are, never how to log in to them.
PASS_THROUGH = ("FFR_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI")


def check_runtime_env(runtime_env: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``runtime_env`` as a dict; raise FFRError if an env var would carry a credential."""
    if not isinstance(runtime_env, Mapping):
        raise FFRError(f"runtime env must be a mapping, got {type(runtime_env).__name__}")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, Mapping):
        raise FFRError(f"runtime env 'env_vars' must be a mapping of name: value, got {env_vars!r}")
    for name, value in env_vars.items():
        if not isinstance(value, str):
            raise FFRError(f"runtime env var {name!r} = {value!r}; expected a string")
        if is_secret_name(name):
            raise FFRError(f"runtime env var {name!r} looks like a credential; runtime envs are visible to anyone "
                           "who can list jobs: use the instance role or the nodes' own environment")
        if has_url_credentials(value):
            raise FFRError(f"runtime env var {name!r} holds a URL with user:password@; expected a URL without "
                           "credentials (set the token on the nodes instead)")
    return dict(runtime_env)


def build_runtime_env(path: str | os.PathLike, extra: Mapping[str, str] | None = None,
                      environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """configs/runtime-env.yaml + PASS_THROUGH variables from ``environ`` + ``extra``; checked for secrets."""
    environ = os.environ if environ is None else environ
    runtime_env = read_yaml_mapping(path, "runtime env file")
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.update({name: environ[name] for name in PASS_THROUGH if environ.get(name)})
    env_vars.update(extra or {})
    runtime_env["env_vars"] = env_vars
    return check_runtime_env(runtime_env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python -m ffr.cluster.runtime_env RUNTIME_ENV.yaml [NAME=value ...]", file=sys.stderr)
        return 2
    try:
        extra = {}
        for item in argv[1:]:
            if "=" not in item:
                raise FFRError(f"extra env var {item!r} is not of the form NAME=value")
            name, value = item.split("=", 1)
            extra[name] = value
        print(json.dumps(build_runtime_env(argv[0], extra)))
    except FFRError as e:
        print(f"ffr.cluster.runtime_env: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
