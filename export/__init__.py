"""Zor → ONNX export (needs torch and onnx)."""
