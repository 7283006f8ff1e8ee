"""Built-in plugin optkit_flexora (see docs)."""
