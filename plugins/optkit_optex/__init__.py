"""Built-in plugin optkit_optex: OptEx (Shu et al., NeurIPS 2024) on GPyTorch kernels.

Modules: :mod:`~optkit_optex.config` (every option, its default and its check:
``EstimatorConfig`` and ``OptExConfig``), :mod:`~optkit_optex.engine` (the one OptEx
iteration over flat tensors, ``init`` / ``plan`` / ``update``), :mod:`~optkit_optex.rules`
(the base update rule on flat points: flat ``torch.optim`` instances, CUDA-graph capturable,
or any registered first-order optimizer), :mod:`~optkit_optex.rounds` (a round's workers
grouped by point: batches per point, early stop), :mod:`~optkit_optex.kernels` (kernels by
name), :mod:`~optkit_optex.hyper` (hyperparameter fitting rules),
:mod:`~optkit_optex.fit_schedule` (when and where they run: refit interval, lagged fits in a
worker thread), :mod:`~optkit_optex.solve` (the solve ``(K + noise I)^-1`` with a jitter
ladder, on the host or on the device), :mod:`~optkit_optex.estimator` (the kernel gradient
estimator and its history), :mod:`~optkit_optex.flat` (params <-> flat vectors).
Front ends of the engine: :mod:`~optkit_optex.optimizer` (the registered ``optex``
optimizer) and :mod:`~optkit_optex.torch_api` (``optkit.OptEx``, a ``torch.optim.Optimizer``).
"""
