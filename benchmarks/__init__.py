"""gpuops benchmark runner: `python -m benchmarks [--only NAME] [--out DIR]` (needs a CUDA GPU)."""
