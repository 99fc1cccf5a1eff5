"""backends: how a clipcore model runs (eager, torchscript, cuda-fp16, ...)."""
