"""finetune: reproducible fine-tuning of language models on top of transformers, PEFT and accelerate."""

__version__ = "0.1.0"
