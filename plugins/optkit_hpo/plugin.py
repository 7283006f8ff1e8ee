"""Entry point of the built-in optkit_hpo plugin (registrations are added as the plugin grows)."""

from __future__ import annotations
