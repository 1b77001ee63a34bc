"""`LoraRows` adds each adapter's LoRA delta to its own rows: the same logits as PEFT's mixed batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import LlamaConfig, LlamaForCausalLM

from service.engines import row_delta
from service.engines.lora_rows import LoraRows

ROWS = ["__base__", "__base__", "wide", "wide", "wide", "narrow"]


def two_adapter_model(*, bias: bool = False) -> PeftModel:
    """A small random Llama (with attention biases if `bias`) with two random adapters of different
    ranks on different layers."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=bias,
    )
    wide = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    narrow = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(LlamaForCausalLM(config), wide, adapter_name="wide")
    peft_model.add_adapter("narrow", narrow)
    return peft_model.eval()


@pytest.fixture(scope="module")
def model() -> PeftModel:
    return two_adapter_model()


# (tokens per row, compiled): 7 tokens put more than `row_delta.MAX_ROWS` adapter tokens in a product,
# which go to torch's addmm_; 2 tokens (a decode step's few rows) go to the compiled kernel, or to torch
# when it is not allowed.
PATHS = [(7, True), (2, True), (2, False)]
PATH_IDS = ["long-rows-torch", "short-rows-compiled-kernel", "short-rows-torch"]


@pytest.mark.parametrize(("tokens", "compiled"), PATHS, ids=PATH_IDS)
def test_stacked_deltas_on_grouped_rows_match_peft_adapter_names(
    model: PeftModel, tokens: int, compiled: bool
) -> None:
    ids = torch.randint(0, 300, (len(ROWS), tokens))
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=ROWS).logits
        rows = LoraRows.of(model, compiled=compiled)
        assert rows.supported
        tuner: Any = model.base_model
        tuner.disable_adapter_layers()
        try:
            base = model(input_ids=ids).logits
            rows.attach()
            rows.set_rows([("wide", 2, 5), ("narrow", 5, 6)])
            mixed = model(input_ids=ids).logits
            kernels = {plan.kernel for plan in rows._plans}
            rows.set_rows([])
            all_base = model(input_ids=ids).logits
            rows.detach()
            detached = model(input_ids=ids).logits
        finally:
            tuner.enable_adapter_layers()
    assert kernels == ({row_delta.compiled()} if compiled else {None})
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert not torch.allclose(mixed[2:], base[2:], atol=1e-3), "the adapters must change their rows"
    assert torch.equal(mixed[:2], base[:2])
    assert torch.equal(detached, base)
    assert torch.equal(all_base, base), "no adapter rows: every row is the base model's"


@pytest.mark.parametrize(("tokens", "compiled"), PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "attention-bias"])
def test_one_adapter_then_two_then_one_again_match_peft(bias: bool, tokens: int, compiled: bool) -> None:
    """The rooms for A matrices grow from one adapter's to two adapters' and shrink back in use; a
    batch all on one adapter (no base rows) works too; biased projections keep their bias."""
    peft_model = two_adapter_model(bias=bias)
    tuner: Any = peft_model.base_model
    ids = torch.randint(0, 300, (len(ROWS), tokens))
    with torch.inference_mode():
        expected_mixed = peft_model(input_ids=ids, adapter_names=ROWS).logits
        peft_model.set_adapter("wide")
        expected_wide = peft_model(input_ids=ids).logits
        tuner.disable_adapter_layers()
        rows = LoraRows.of(peft_model, compiled=compiled)
        rows.attach()
        try:
            rows.set_rows([("wide", 2, 6)])
            one = peft_model(input_ids=ids).logits
            rows.set_rows([("wide", 2, 5), ("narrow", 5, 6)])
            two = peft_model(input_ids=ids).logits
            rows.set_rows([("wide", 0, 6)])
            all_wide = peft_model(input_ids=ids).logits
        finally:
            rows.detach()
            tuner.enable_adapter_layers()
    assert torch.allclose(one[2:], expected_wide[2:], atol=1e-5)
    assert torch.allclose(two, expected_mixed, atol=1e-5)
    assert torch.allclose(all_wide, expected_wide, atol=1e-5)


def test_turning_the_kernel_off_and_on_replans_the_rows_in_use(model: PeftModel) -> None:
    """`compiled` set on an attached `LoraRows` changes the plans of the rows already set (what
    `bench/lora_step.py` relies on to time both paths in one run)."""
    rows = LoraRows.of(model)
    rows.attach()
    try:
        with torch.inference_mode():  # as the engine runs: the joint weights are inference tensors
            rows.set_rows([("wide", 2, 5)])
            assert {plan.kernel for plan in rows._plans} == {row_delta.compiled()}
            rows.compiled = False
            assert {plan.kernel for plan in rows._plans} == {None}
            rows.compiled = True
            assert {plan.kernel for plan in rows._plans} == {row_delta.compiled()}
    finally:
        rows.detach()


def test_the_base_weights_are_joined_once_and_not_copied(model: PeftModel) -> None:
    """Each group's base weights become rows of one joint weight; a `LoraRows` built later (after an
    adapter load) reuses it instead of copying the base model again."""
    first = LoraRows.of(model)
    first.attach()
    first.detach()
    layers: list[Any] = [module for module in model.modules() if isinstance(module, LoraLayer)]
    pointers = [layer.base_layer.weight.data_ptr() for layer in layers]
    q, k = layers[0].base_layer.weight, layers[1].base_layer.weight
    assert k.data_ptr() == q.data_ptr() + q.numel() * q.element_size(), "k's rows follow q's"
    second = LoraRows.of(model)
    second.attach()
    second.detach()
    assert [layer.base_layer.weight.data_ptr() for layer in layers] == pointers


def test_projections_reading_one_input_share_their_low_rank_product(model: PeftModel) -> None:
    rows = LoraRows.of(model)
    names = [
        name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, LoraLayer)
    ]
    groups = [[names[index] for index in group] for group in rows._group_indices]
    layer = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    assert groups == layer * 2


def test_dora_is_left_to_peft() -> None:
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    dora = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    assert not LoraRows.of(dora).supported
