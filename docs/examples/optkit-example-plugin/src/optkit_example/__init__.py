"""An example third-party optkit plugin (see docs/plugins.md)."""
