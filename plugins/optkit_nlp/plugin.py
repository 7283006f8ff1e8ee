"""Entry point of the built-in optkit_nlp plugin (registrations are added as the plugin grows)."""

from __future__ import annotations

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
