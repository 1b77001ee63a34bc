"""Training backends: Unsloth (`FastLanguageModel`, CUDA only) or PEFT + TRL (CPU or GPU).

Both return a base model with the same LoRA adapter attached and its tokenizer; the trainer runs TRL's
SFT trainer on either, so the same config gives the same kind of output. With `init_adapter` the adapter
attached is the parent's, loaded trainable, instead of a fresh one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from training.train.config import TrainConfig

GPU_EXTRA = "pip install 'zantara[gpu]'"


class BackendError(RuntimeError):
    """The requested backend or quantisation cannot run here; the message names the fix."""


@dataclass(frozen=True)
class Environment:
    """What the machine offers: CUDA, and whether unsloth and bitsandbytes are installed."""

    cuda: bool
    unsloth: bool
    bitsandbytes: bool

    @classmethod
    def detect(cls) -> Environment:
        """Probe this machine without importing unsloth or bitsandbytes."""
        import torch

        return cls(
            cuda=torch.cuda.is_available(),
            unsloth=importlib.util.find_spec("unsloth") is not None,
            bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        )


def select_backend(requested: str, *, qlora: bool, env: Environment) -> Literal["peft", "unsloth"]:
    """The backend to use, or a `BackendError` saying why the request cannot run and what to install."""
    if requested not in ("auto", "peft", "unsloth"):
        raise BackendError(f"backend must be auto, peft or unsloth, not {requested!r}")
    if qlora and not env.cuda:
        raise BackendError("QLoRA (4-bit) needs a CUDA GPU; train without --qlora on this machine")
    if requested == "unsloth":
        if not env.unsloth:
            raise BackendError(f"the unsloth backend needs Unsloth: install it with `{GPU_EXTRA}`")
        if not env.cuda:
            raise BackendError("the unsloth backend needs a CUDA GPU; use --backend peft on this machine")
    backend: Literal["peft", "unsloth"] = (
        "unsloth" if requested == "unsloth" or (requested == "auto" and env.unsloth and env.cuda) else "peft"
    )
    if qlora and backend == "peft" and not env.bitsandbytes:
        raise BackendError(f"QLoRA needs bitsandbytes: install it with `{GPU_EXTRA}`")
    return backend


def load_model(config: TrainConfig, backend: Literal["peft", "unsloth"]) -> tuple[Any, Any]:
    """Load the base model (4-bit with QLoRA) with the LoRA adapter attached (a PEFT model), and its
    tokenizer. The adapter is a fresh one, or `config.init_adapter` loaded trainable."""
    if backend == "unsloth":
        return _load_unsloth(config)
    return _load_peft(config)


def _lora_kwargs(config: TrainConfig) -> dict[str, Any]:
    return {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": list(config.target_modules),
        "bias": "none",
    }


def _load_peft(config: TrainConfig) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if torch.cuda.is_available():
        kwargs = {"dtype": torch.bfloat16, "device_map": {"": 0}}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
    if config.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    torch.manual_seed(config.seed)
    if config.init_adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True), tokenizer
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **_lora_kwargs(config))), tokenizer


def _load_unsloth(config: TrainConfig) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    if config.init_adapter is not None:
        # Unsloth's way to continue a LoRA: load the adapter folder (it brings its base, which
        # `read_parent` checked is `config.base_model`) and train it as it is, without a new adapter.
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(config.init_adapter),
            max_seq_length=config.max_length,
            load_in_4bit=config.qlora,
            dtype=None,
        )
        return model, tokenizer
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=config.base_model,
        max_seq_length=config.max_length,
        load_in_4bit=config.qlora,
        dtype=None,
    )
    model = FastLanguageModel.get_peft_model(
        model, use_gradient_checkpointing="unsloth", random_state=config.seed, **_lora_kwargs(config)
    )
    return model, tokenizer
