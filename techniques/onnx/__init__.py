"""The runnable ONNX model a plan asks for, and reading one back.

``writer`` (:func:`~techniques.onnx.writer.quantize_onnx`, the entry point) runs the per-layer
passes -- ``rewrite`` (fp16, weight-only codes, opset), ``int8`` (static QDQ and QLinear forms),
``matmulnbits`` (weight-only Linear layers for onnxruntime's MatMulNBits), ``tables`` (embedding
tables) -- over the helpers of ``graph``, on a model named by ``names``; ``inspect`` reads how
each layer is stored from the file alone.
"""
