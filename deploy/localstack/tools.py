"""Finding the external programs the stack runs, with install advice when they are missing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from deploy.localstack.errors import MissingToolError

log = logging.getLogger(__name__)

JAVA_MAVEN_INSTALL = "apt-get install openjdk-17-jre-headless maven"


def require_tool(name: str, install_hint: str, search_path: str | None = None) -> str:
    """The absolute path of ``name`` on ``search_path`` (default: $PATH), or a MissingToolError.

    ``search_path`` exists so tests can simulate a machine without the tool.
    """
    found = shutil.which(name, path=search_path)
    if found is None:
        raise MissingToolError(
            f"`{name}` was not found on PATH; the local stack needs it. Install it with: {install_hint}"
        )
    return found


def find_redis_server(search_path: str | None = None, *, allow_install: bool = True) -> str:
    """The path of ``redis-server``, installing Debian's package first when that is possible."""
    return find_or_install("redis-server", "redis-server", search_path, allow_install=allow_install)


def find_or_install(tool: str, package: str, search_path: str | None = None, *, allow_install: bool = True) -> str:
    """The path of ``tool``, installing the Debian ``package`` first when that is possible.

    Installing is attempted only as root on a machine with apt-get, because anything else would
    need an interactive sudo prompt in the middle of ``stack up`` or a benchmark.
    """
    hint = f"apt-get install {package}"
    found = shutil.which(tool, path=search_path)
    if found is not None:
        return found
    apt_get = shutil.which("apt-get", path=search_path)
    if not allow_install or os.geteuid() != 0 or apt_get is None:
        raise MissingToolError(f"`{tool}` was not found on PATH. Install it with: {hint}")
    log.info("%s is missing; installing Debian's %s package", tool, package)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt_get, "update"], [apt_get, "install", "-y", package]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MissingToolError(
                f"`{' '.join(argv)}` failed (exit {result.returncode}); install it yourself "
                f"with: {hint}\n{result.stderr.strip()[-2000:]}"
            )
    return require_tool(tool, hint, search_path)
