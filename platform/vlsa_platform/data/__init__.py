"""Data: LLaVA-format records, tokenization, cognition-alignment targets, the frozen-target cache.

Knows nothing of Ray, DeepSpeed or MLflow (DESIGN.md §3); parallel target computation under Ray lives in
``orchestration``.
"""
