"""LoRA / QLoRA training of an adapter: its configuration, backends (PEFT on CPU, Unsloth on GPU),
callbacks and the `zantara train` command."""
