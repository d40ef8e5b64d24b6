"""finetune: reproducible fine-tuning of language models on top of transformers, PEFT and accelerate."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

import logging as _logging

# bitsandbytes (which peft imports when it is installed) warns at import that an optional CPU kernel from the Hugging
# Face hub is missing; runs here are offline and its built-in CPU path is used. The filter drops that one message.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: "kernels-community" not in record.msg)
