"""Errors with a message meant for the user: the CLI prints them without a traceback."""

from __future__ import annotations


class AgentserveError(Exception):
    """Base class of every error whose message is meant for the user."""


class ManifestError(AgentserveError):
    """A policy artifact or its manifest is malformed, tampered with or unsafe to load."""


class ConfigError(AgentserveError):
    """A command-line option, preset or configuration value is invalid."""
