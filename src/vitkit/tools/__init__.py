"""Tools around the models: FLOP counting, speed/memory benchmarks, ONNX export, int8 quantisation.

Import the submodules directly (``from vitkit.tools.flops import count_flops``); they are not imported here so
that ``import vitkit`` stays light and onnx / onnxruntime stay optional.
"""
