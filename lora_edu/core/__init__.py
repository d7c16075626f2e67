"""The mathematics and the models: LoRA layers, adapters, the memory model, low-rank algebra, tasks.

Nothing here draws or displays, so a benchmark script on a GPU machine can import it alone.
"""
