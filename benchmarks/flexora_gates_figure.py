"""Figure of Flexora's gates per layer over the search, from ``results.jsonl`` trace files.

python benchmarks/flexora_gates_figure.py OUT.png RUN_DIR/social_iqa-flexora-s0 ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out, dirs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    fig, axes = plt.subplots(len(dirs), 1, figsize=(9, 2.6 * len(dirs)), squeeze=False)
    for ax, folder in zip(axes[:, 0], dirs, strict=True):
        rows = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
        gates = np.array([r["gates"] for r in rows if r.get("stage") == "search"])
        selected = next(r["selected_layers"] for r in rows if r.get("stage") == "selection")
        image = ax.imshow(
            gates, aspect="auto", cmap="coolwarm", vmin=0.85, vmax=1.15, interpolation="nearest"
        )
        for layer in selected:
            ax.plot(
                layer, gates.shape[0] - 0.5, marker="^", color="black", markersize=5, clip_on=False
            )
        ax.set_title(f"{folder.name}: gate L*softmax(a) per layer (triangles: selected)")
        ax.set_xlabel("layer")
        ax.set_ylabel("search step")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
