"""Pretrained language models from the offline artifacts, with a fast safetensors cache.

``load_causal_lm("smollm2-135m")`` fetches the GGUF file through :mod:`optkit.data`, loads it
with transformers (dequantized to float32, about 15-30 s on a CPU the first time), and saves a
plain safetensors copy under ``cache_dir()/derived/``; later loads read that copy (about 1 s).
``load_encoder("minilm-l6")`` loads all-MiniLM-L6-v2 (a BERT encoder) straight from its
artifact folder with ``AutoModel.from_pretrained`` (safetensors already; about 1 s).
transformers is imported inside the functions (``import optkit`` stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class ModelSpec:
    """A model the text objectives can load.

    Attributes:
        artifact: the data artifact holding it (:mod:`optkit_nlp.text_catalog`).
        gguf_file: the GGUF file inside the artifact (causal LMs; "" for a safetensors folder).
        description: one line for the docs.
        kind: ``"causal"`` (options scored by their log-likelihood) or ``"encoder"`` (a
            linear head over the pooled embedding, :mod:`optkit_nlp.encoder`).
        target_modules: default LoRA target modules (linear module names).
        train_losses: the objective's valid ``train_loss`` values for this model.
    """

    artifact: str
    gguf_file: str
    description: str
    kind: Literal["causal", "encoder"] = "causal"
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_losses: tuple[str, ...] = ("choice_ce", "answer_nll", "token_nll")


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        artifact="smollm2-135m-gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Llama architecture, 30 layers, 134.5M parameters",
    ),
    "minilm-l6": ModelSpec(
        artifact="all-minilm-l6-v2",
        gguf_file="",
        description="all-MiniLM-L6-v2, BERT encoder, 6 layers, 22.7M parameters",
        kind="encoder",
        target_modules=("query", "value"),
        train_losses=("choice_ce",),
    ),
}


def model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ConfigError listing the valid names otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _converted_dir(name: str) -> Path:
    from optkit.data import derived_dir

    return derived_dir(f"{name}-safetensors")


def ensure_converted(name: str) -> Path:
    """Folder with ``config.json``, ``model.safetensors`` and the tokenizer of model ``name``.

    Converts the GGUF artifact once (dequantized float32) and returns the cached folder.

    Raises:
        ConfigError: unknown model name.
        DataError: the artifact cannot be fetched.
    """
    spec = model_spec(name)
    if spec.kind != "causal":
        raise ConfigError(f"model '{name}' is an encoder, not a GGUF causal LM: use load_encoder")
    folder = _converted_dir(name)
    if (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import optkit.data
    import optkit_nlp.text_catalog  # noqa: F401  (registers the artifacts)

    gguf = optkit.data.fetch(spec.artifact)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=spec.gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=spec.gguf_file)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    missing = plain.load_state_dict(quantized.state_dict(), strict=True)
    if missing.missing_keys or missing.unexpected_keys:  # pragma: no cover - strict raises
        raise DataError(f"model '{name}': state dict mismatch {missing}")
    tmp = folder.with_name(folder.name + ".partial")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def load_causal_lm(
    name: str, *, attn_implementation: str = "eager", dtype: Any = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the cached model ``name`` (a fresh model on every call).

    Args:
        name: a key of :data:`MODELS`.
        attn_implementation: ``"eager"`` supports double backward (unrolled hypergradients);
            ``"sdpa"`` is faster for plain fine-tuning.
        dtype: torch dtype of the weights (default float32).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_converted(name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation=attn_implementation, dtype=dtype or torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_encoder(
    name: str, *, attn_implementation: str = "eager", dtype: Any = None
) -> tuple[Any, Any]:
    """``(encoder, tokenizer)`` of the encoder model ``name`` (a fresh model on every call),
    loaded offline from its artifact folder; the encoder's pooler (unused: the objectives
    mean-pool) is dropped.

    Raises:
        ConfigError: unknown model name, or a causal LM.
        DataError: the artifact cannot be fetched.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    import optkit.data
    import optkit_nlp.text_catalog  # noqa: F401  (registers the artifacts)

    spec = model_spec(name)
    if spec.kind != "encoder":
        raise ConfigError(f"model '{name}' is a causal LM, not an encoder: use load_causal_lm")
    folder = optkit.data.fetch(spec.artifact)
    model = AutoModel.from_pretrained(
        folder, attn_implementation=attn_implementation, dtype=dtype or torch.float32
    )
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer
