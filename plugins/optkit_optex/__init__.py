"""Built-in plugin optkit_optex: OptEx (Shu et al., NeurIPS 2024) on GPyTorch kernels.

Modules: :mod:`~optkit_optex.kernels` (kernels by name), :mod:`~optkit_optex.hyper`
(hyperparameter fitting), :mod:`~optkit_optex.estimator` (the kernel gradient estimator),
:mod:`~optkit_optex.optimizer` (the registered ``optex`` optimizer),
:mod:`~optkit_optex.torch_api` (``optkit.OptEx``, a ``torch.optim.Optimizer``).
"""
