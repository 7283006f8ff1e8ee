"""Built-in plugin optkit_nlp (see docs)."""
