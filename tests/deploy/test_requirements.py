"""pyproject.toml declares the versions the code needs, and the environment that runs the tests has them."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def requirements(*groups: str) -> dict[str, Requirement]:
    """The declared requirements of the base dependencies and the named extras, by package name."""
    declared = list(PROJECT["dependencies"])
    for group in groups:
        declared += PROJECT["optional-dependencies"][group]
    found = [Requirement(line) for line in declared]
    return {canonicalize_name(r.name): r for r in found if canonicalize_name(r.name) != PROJECT["name"]}


INSTALLED = requirements("train", "dev")
ALL = requirements("train", "gpu", "dev")


@pytest.mark.parametrize("name", sorted(INSTALLED))
def test_the_installed_version_satisfies_the_declared_one(name: str) -> None:
    requirement = INSTALLED[name]
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"{requirement} does not apply here")
    try:
        installed = version(name)
    except PackageNotFoundError:
        pytest.fail(f"{requirement} is declared but not installed (run `make install`)")
    assert requirement.specifier.contains(installed, prereleases=True), f"{name} {installed} vs {requirement}"


# The oldest release of each package that has what the code calls; one version below it must be refused.
NEEDED = {
    # `from_pretrained(dtype=...)`, `DynamicCache.layers`, `warmup_steps` below 1 read as a share
    "transformers": ("5.0.0", "4.57.6"),
    # the first PEFT for transformers 5 (older ones break `from transformers import Trainer`)
    "peft": ("0.18.0", "0.17.1"),
    # SFTConfig(completion_only_loss=..., max_length=...) on transformers 5; KTO and DPO keep a PEFT
    # model's loaded adapter as a frozen "ref" copy, and 1.13's fused KTO loss ignored that reference
    "trl": ("1.14.0", "1.13.0"),
    # transformers 5's own floor
    "torch": ("2.6.0", "2.5.1"),
    # `NoDecode` for the comma-separated ZANTARA_API_KEYS
    "pydantic-settings": ("2.7.0", "2.6.1"),
    # the first vLLM released on transformers 5
    "vllm": ("0.19.1", "0.19.0"),
}
# What the GPU images install together: vLLM 0.33 (torch 2.14.0, transformers < 5.21) and Unsloth
# 2026.10 (transformers <= 5.17, trl <= 1.15) must still fit the declared ranges.
GPU_STACK = {"torch": "2.14.0", "transformers": "5.17.0", "trl": "1.15.0", "peft": "0.21.2", "vllm": "0.33.0"}


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_declared_floors_are_the_apis_the_code_uses(name: str) -> None:
    oldest, too_old = NEEDED[name]
    specifier = ALL[name].specifier
    assert specifier.contains(oldest) and not specifier.contains(too_old), f"{name}: {specifier}"


@pytest.mark.parametrize("name", sorted(GPU_STACK))
def test_the_gpu_stack_fits_the_declared_ranges(name: str) -> None:
    assert ALL[name].specifier.contains(GPU_STACK[name]), f"{name} {GPU_STACK[name]} vs {ALL[name]}"
