"""Entry point of the built-in ``optkit_hpo`` plugin: black-box hyperoptimizers.

Importing this module imports neither botorch nor gpytorch (they load on the first BO round).
"""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_hpo.bayesopt import BoTorchSearch
from optkit_hpo.random_search import RandomSearch


@hookimpl
def optkit_register_hyperoptimizers(register: Register) -> None:
    register(RandomSearch)
    register(BoTorchSearch)
