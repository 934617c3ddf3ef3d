"""Measuring models: latency, ONNX export, the headline scorecard."""
