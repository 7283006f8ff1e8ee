"""Built-in plugin optkit_vision (see docs)."""
