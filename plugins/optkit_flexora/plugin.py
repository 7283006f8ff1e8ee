"""Entry point of the built-in optkit_flexora plugin: the ``flexora`` and ``lora_baselines``
hyperoptimizers (heavy imports happen inside the hook)."""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl


@hookimpl
def optkit_register_hyperoptimizers(register: Register) -> None:
    from optkit_flexora.baselines import LoraBaselines
    from optkit_flexora.flexora import Flexora

    register(Flexora)
    register(LoraBaselines)
