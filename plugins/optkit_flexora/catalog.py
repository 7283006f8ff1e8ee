"""Listed in :data:`optkit.data.artifacts.CATALOG_MODULES`: registers the text artifacts
(SmolLM2, BIG-bench tasks, Rotten Tomatoes) that Flexora's tasks use."""

from __future__ import annotations

import optkit_nlp.text_catalog  # noqa: F401  (registers on import)
