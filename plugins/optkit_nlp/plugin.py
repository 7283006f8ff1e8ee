"""Entry point of the built-in optkit_nlp plugin (registrations are added as the plugin grows)."""

from __future__ import annotations

from collections.abc import Callable

from optkit.data import Artifact
from optkit.hookspecs import Register, hookimpl


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    from optkit_nlp.shakespeare import Shakespeare

    register(Shakespeare)


# --- LoRA text objectives (Flexora helper): a second implementation of the same hook ---
@hookimpl(specname="optkit_register_objectives")
def register_text_objectives(register: Register) -> None:
    """Register the LoRA text objectives of :mod:`optkit_nlp.lm_tasks` (social_iqa, winowhy,
    strategyqa, rotten_tomatoes, us_debates)."""
    from optkit_nlp.lm_tasks import TEXT_OBJECTIVES

    for cls in TEXT_OBJECTIVES:
        register(cls)


@hookimpl
def optkit_register_artifacts(register: Callable[[Artifact], None]) -> None:
    """Shakespeare, SmolLM2-135M and the text tasks' data (:mod:`optkit_nlp.text_catalog`)."""
    from optkit_nlp.text_catalog import ARTIFACTS

    for artifact in ARTIFACTS:
        register(artifact)
