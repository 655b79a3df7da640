"""Errors the stack manager raises; the CLI prints their message and exits non-zero."""

from __future__ import annotations


class StackError(RuntimeError):
    """Something about the local stack needs the user's attention; the message says what."""


class MissingToolError(StackError):
    """A program the stack needs (java, mvn, redis-server) is not installed."""


class StartupError(StackError):
    """A service did not come up; the message carries the tail of its log."""
