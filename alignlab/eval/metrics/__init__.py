"""Task metrics: safety, summarization, code, math. Each module documents its definitions."""
