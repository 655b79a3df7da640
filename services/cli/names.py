"""The command line's check of namespace names, shared by every command that takes one."""

from __future__ import annotations

import typer

from profiles.namespaces import NamespaceNameError, check_name


def namespace_name(value: str | None) -> str | None:
    """A typer callback: ``value`` if it can name a namespace, else a usage error (exit 2) before anything
    runs. A name such as ``l*`` would otherwise reach ``namespace drop``'s SCAN pattern."""
    if value is None:
        return None
    try:
        return check_name(value)
    except NamespaceNameError as exc:
        raise typer.BadParameter(str(exc)) from exc
