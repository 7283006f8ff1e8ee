"""The two models of issue 19's GPU study, as the GPU benchmarks time them.

``GPU_STUDY_NETWORKS`` maps a name to ``(objective spec, Adam learning rate)``: the objectives of
``tasks/study-optex-networks-{fashion,shakespeare}-gpu.toml`` at batch 256 with their vanilla
rows' rates (``tests/benchmarks/test_framework_overhead_script.py`` checks that they agree).
``benchmarks/optex_gpu.py`` and ``benchmarks/framework_overhead.py`` (``--networks``) both read
this one definition. Their data must be in the cache (``optkit data fetch fashion-mnist
shakespeare``).
"""

from __future__ import annotations

from typing import Any

GPU_STUDY_NETWORKS: dict[str, tuple[dict[str, Any], float]] = {
    "fashion_cnn_b256": ({"name": "fashion_mnist", "model": "cnn", "batch_size": 256}, 1e-3),
    "shakespeare_b256": (
        {
            "name": "shakespeare",
            "context": 64,
            "width": 64,
            "layers": 2,
            "heads": 4,
            "batch_size": 256,
        },
        3e-3,
    ),
}
