"""amqs: automated mixed-precision quantization search for BERT-family models.

Layers, from the bottom up: ``amqs.quant`` (pure quantization math, fake-quant modules, model
surgery, size accounting), ``amqs.data`` and ``amqs.models`` (I/O), ``amqs.train`` (the
training loop), and thin Hydra entry points (``amqs.finetune``).
"""

__version__ = "0.1.0"
