"""Evaluation: task metrics, sandboxed code execution, paired statistics and comparison reports.

Modules: ``data`` (tasks, example files, prompts), ``scoring`` (per-row metrics, summaries,
``write_eval``), ``metrics/`` (safety, summarization, code, math), ``sandbox``, ``passk``,
``stats``, ``compare`` (the ``alignlab compare`` command) and ``report``. See docs/evaluation.md.
"""
