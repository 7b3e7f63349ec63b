"""Orchestration: the plan of an experiment (``plan``, no Ray) and, later, its Ray Jobs / Tune / Train launch.

This ``__init__`` imports nothing, so that planning (``vlsa-platform validate``) never loads Ray.
"""
