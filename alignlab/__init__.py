"""alignlab: post-training toolkit for small open language models."""

__version__ = "0.1.0"
