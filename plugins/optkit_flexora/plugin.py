"""Entry point of the built-in optkit_flexora plugin (registrations are added as the plugin grows)."""

from __future__ import annotations
