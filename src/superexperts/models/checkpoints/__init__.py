"""Checkpoints as published, read without loading the model.

`files` (safetensors headers and byte ranges), `formats` (block-wise FP8, MXFP4), `integrity`
(complete? equal to what is loaded?), `reader` (one layer's tensors at a time), `skeleton` (the
model on the meta device) and `export` (a pruned copy). It may import the rest of `models` and `runs`.
"""
