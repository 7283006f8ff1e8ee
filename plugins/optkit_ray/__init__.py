"""Built-in plugin optkit_ray (see docs)."""
