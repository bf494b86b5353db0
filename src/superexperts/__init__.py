"""superexperts: find, explain and protect the Super Experts of MoE language models."""

__version__ = "0.1.0"
