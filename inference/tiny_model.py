"""A tiny random-weight Mixture-of-Experts chat model, built on the fly for tests and benches.

Its text is gibberish: it exists to exercise the plumbing (chat template, tokenizer, MoE routing,
streaming, batching, constraints), never to say anything sensible. Building takes about a second
and writes a few MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# ChatML, the layout Qwen models use; `add_generation_prompt` opens the assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Enough varied text for a byte-level BPE to learn a few hundred merges, including JSON punctuation.
_CORPUS_WORDS = (
    "the feed is saying that people talk about news sports weather music science space tech "
    "markets elections storms earthquakes football rain snow festival launch rocket vote poll "
    "yes no true false null label topic score summary question answer follow up why how what "
    "when where who which today tomorrow yesterday breaking update report thread reply quote "
    "0 1 2 3 4 5 6 7 8 9 10 42 100 2026"
).split()


def _corpus() -> list[str]:
    lines: list[str] = []
    n = len(_CORPUS_WORDS)
    for i in range(400):
        words = [_CORPUS_WORDS[(i * 7 + j * 13) % n] for j in range(12)]
        lines.append(" ".join(words))
        lines.append(json.dumps({"label": words[0], "score": i % 10, "ok": i % 2 == 0}))
    return lines


def build_tiny_moe(path: Path | str, *, seed: int = 0, context_window: int = 1024) -> Path:
    """Write a tiny Qwen3-MoE (hidden 256, 8 experts, top-2, 2 layers) and its tokenizer to `path`.

    The folder loads with `AutoModelForCausalLM` / `AutoTokenizer` and carries a ChatML chat
    template. The same `seed` gives the same weights. Returns `path`.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=context_window,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out)

    config = Qwen3MoeConfig(  # type: ignore[call-arg]  # head_dim is accepted at runtime
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_experts=8,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        max_position_embeddings=context_window,
        bos_token_id=None,
        eos_token_id=int(tokenizer.convert_tokens_to_ids("<|im_end|>")),  # type: ignore[arg-type]
        pad_token_id=int(tokenizer.convert_tokens_to_ids("<|endoftext|>")),  # type: ignore[arg-type]
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config)
    model.eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    return out


# Other architectures the local engine must handle, as tiny random models (same tokenizer).
_OTHER_KINDS = ("mixtral", "olmoe", "granitemoe", "llama")


def build_tiny_model(path: Path | str, kind: str, *, seed: int = 0) -> Path:
    """Like `build_tiny_moe`, for another architecture: one of `mixtral`, `olmoe`, `granitemoe`
    (MoE) or `llama` (dense). Same tokenizer and chat template; hidden 128, 2 layers."""
    import torch
    from transformers import (
        AutoTokenizer,
        GraniteMoeConfig,
        GraniteMoeForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
        OlmoeConfig,
        OlmoeForCausalLM,
    )

    if kind not in _OTHER_KINDS:
        raise ValueError(f"kind must be one of {_OTHER_KINDS}")
    out = Path(path)
    build_tiny_moe(out, seed=seed)  # writes the tokenizer (and a Qwen3-MoE we replace)
    tokenizer = AutoTokenizer.from_pretrained(out)
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }
    moe = {"num_experts_per_tok": 2}
    classes: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        "mixtral": (MixtralConfig, MixtralForCausalLM, {**moe, "num_local_experts": 4}),
        "olmoe": (OlmoeConfig, OlmoeForCausalLM, {**moe, "num_experts": 4}),
        "granitemoe": (GraniteMoeConfig, GraniteMoeForCausalLM, {**moe, "num_local_experts": 4}),
        "llama": (LlamaConfig, LlamaForCausalLM, {}),
    }
    config_cls, model_cls, extra = classes[kind]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common, **extra))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    model.save_pretrained(out)
    return out
