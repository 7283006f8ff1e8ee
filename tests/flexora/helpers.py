"""Tiny real transformers models (random init from a config) and byte-level real text, for the
unit tests of layer discovery, gates and hypergradients; the task tests use the real SmolLM2."""

from __future__ import annotations

from typing import Any

import torch

TEXT = (
    "Tracy didn't go home that evening and resisted Riley's attacks. "
    "Is it common to see frost during some college commencements? "
    "The city councilmen refused the demonstrators a permit because they feared violence. "
    "A three-hour cinema master class. Too bad the plot is as musty as the carpets."
)


def text_batches(n: int, length: int = 16, batch: int = 2, offset: int = 0) -> list[Any]:
    """``n`` batches of ``(batch, length)`` byte ids cut from :data:`TEXT` (vocab 256)."""
    ids = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    out = []
    for i in range(n):
        rows = [ids[(offset + (i * batch + j) * 7) % 100 :][:length] for j in range(batch)]
        out.append(torch.stack(rows))
    return out


def tiny_llama(layers: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config._attn_implementation = "eager"
    return model.to(dtype).eval()


def tiny_gpt2(layers: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> Any:
    """GPT-2 keeps float64 end to end (Llama's RMSNorm computes in float32, which spoils
    finite differences)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=layers,
        n_embd=32,
        n_head=4,
        vocab_size=256,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    return model.to(dtype).eval()


def tiny_lora(
    layers: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0, arch: str = "llama"
) -> Any:
    """A PEFT LoRA (r=4; Llama q_proj/v_proj, GPT-2 c_attn) tiny model whose B factors are
    non-zero (seeded)."""
    from peft import LoraConfig, get_peft_model

    if arch == "llama":
        base, targets, fan = tiny_llama(layers, dtype, seed), ["q_proj", "v_proj"], False
    else:
        base, targets, fan = tiny_gpt2(layers, dtype, seed), ["c_attn"], True
    model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, fan_in_fan_out=fan),
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def lora_params(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def lm_loss(model: Any, params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``batch`` (B, T) at ``params`` (functional_call)."""
    from torch.func import functional_call

    logits = functional_call(model, params, (batch,), {"use_cache": False}, strict=False).logits
    # computed here rather than with labels=: transformers' loss casts logits to float32
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
    )


def text_cell_context(spec: dict[str, Any], seed: int) -> Any:
    """A :class:`~optkit.interfaces.HyperContext` of one Flexora / baselines cell whose
    ``create_objective`` builds ``spec`` (a real text objective) with dotted-key overrides
    (``{"objective.layers": [0]}``); it runs no trials."""
    import pytest

    import optkit
    from optkit.interfaces import HyperContext

    registry = optkit.get_registry()

    def create(overrides: Any) -> Any:
        keys = {key.split(".", 1)[1]: value for key, value in overrides.items()}
        return registry.create("objective", {**spec, **keys})

    return HyperContext(
        objective_spec=spec,
        optimizer_spec={"name": "adamw"},
        budget={},
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        run_trial=lambda overrides: pytest.fail("no trials in this context"),
        create_objective=create,
        create_optimizer=lambda overrides: registry.create("optimizer", {"name": "adamw"}),
        record=lambda row: None,
    )
