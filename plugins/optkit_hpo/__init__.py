"""Built-in plugin ``optkit_hpo``: black-box hyperparameter optimization (random search and
BoTorch Bayesian optimization) over search spaces declared in task files (see docs/hpo.md)."""
