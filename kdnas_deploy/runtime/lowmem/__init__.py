"""Low-memory helpers of the deployed path: the same bytes as the plain libraries, a fraction of the peak.

``streamed_weights`` (the exporter writes weights one tensor at a time), ``lean_fusion`` (ORT's fusions
with the weights on disk), ``onnx_stream`` (single file <-> external data, one tensor at a time) and
``memory`` (hand freed heap back to the OS between steps).
"""
