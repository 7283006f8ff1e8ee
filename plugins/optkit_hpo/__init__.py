"""Built-in plugin optkit_hpo (see docs)."""
