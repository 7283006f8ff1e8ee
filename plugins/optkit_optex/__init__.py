"""Built-in plugin optkit_optex (see docs)."""
