"""What a model is and where its weights live.

Owns the family adapters (`adapters`: where each family keeps its layers, experts, router and shared
expert, as data), expert lists (`experts`), sizes and per-token costs (`shape`, `costs`), loading
from a hub id or folder (`loading`, `fields`), device maps (`device_map`), checkpoints on disk
(`checkpoints/`: files, FP8/MXFP4 formats, integrity, the layer reader, the empty skeleton, export)
and the built-in demo (`demo*`). It may import `runs` only.
"""
