"""alignlab: post-training toolkit for small open language models."""

from pathlib import Path

__version__ = "0.1.0"

# The built-in data files (sample datasets, preference pairs, the planner's model and GPU catalogs),
# shipped as package data; alignlab/data.py is the code that loads datasets.
ASSETS = Path(__file__).resolve().parent / "assets"
