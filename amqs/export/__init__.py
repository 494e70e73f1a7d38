"""Materialize a trained (fake-)quantized model as a real integer ONNX model.

- :mod:`amqs.export.pack`: bit-packing (NumPy) and its ONNX unpacking sub-graph.
- :mod:`amqs.export.materialize`: PyTorch model -> integer arrays, pruned neurons/heads removed.
- :mod:`amqs.export.graph`: integer arrays -> ONNX (ORT CPU integer kernels).
- :mod:`amqs.export.app`: ``amqs-export RUN_DIR --out DIR`` (load a run, export, check parity).
"""

from amqs.export.graph import build_model
from amqs.export.materialize import BertArrays, materialize

__all__ = ["BertArrays", "build_model", "materialize"]
