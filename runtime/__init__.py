"""Torch-free inference on onnxruntime."""
