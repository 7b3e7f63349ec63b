"""Validation metrics beyond the losses (issue 5): greedy answers to held-out questions, and reconstruction PSNR.

One concept per module:

- :mod:`.questions`: the held-out samples of a collated validation batch, each with its answers (text, VQ,
  pixels) and the prompt that precedes each one;
- :mod:`.generation`: one greedy answer from the model (transformers' ``generate`` on the LLM, the image
  features spliced in by the model's own ``embed_inputs``, as in its forward);
- :mod:`.answers`: exact match of a generated answer with the reference, after normalisation;
- :mod:`.cognition_scores`: VQ-window and pixel accuracy of a generated cognition answer;
- :mod:`.psnr`: PSNR of reconstructions;
- :mod:`.validation`: one pass's tallies (sums and counts that add up over batches and ranks) and the greedy
  decoding of a pass, kept in step across ZeRO-3 ranks.

Imports torch, transformers, ``model`` and ``data`` only (never Ray, DeepSpeed or MLflow, DESIGN.md §3); the
training loop (``train.validate.evaluate``) wires it in, reduces the tallies over ranks and names the metrics.
"""
