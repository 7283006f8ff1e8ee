"""Built-in plugin optkit_rl (see docs)."""
