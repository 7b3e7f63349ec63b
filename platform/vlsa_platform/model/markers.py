"""Plain values the model and the data agree on: LLaMA-3's special tokens, the image placeholder of a
conversation, the label that the loss ignores, and the label groups that tag cognition answers. Importable
without torch or transformers, so the light data modules (records, inspection) can read them too."""

from __future__ import annotations

BOS_TOKEN = "<|begin_of_text|>"
END_OF_TEXT_TOKEN = "<|end_of_text|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"  # the Instruct model's end of turn, and its eos
RESERVED_0_TOKEN = "<|reserved_special_token_0|>"
PAD_TOKEN = "<|finetune_right_pad_id|>"  # LLaMA-3.1's name for its pad token; the tiny tokenizer has it

#: The placeholder that marks where the image goes in the first user turn (LLaVA's ``DEFAULT_IMAGE_TOKEN``);
#: the ``tiny`` tokenizer has it as a special token.
IMAGE_PLACEHOLDER = "<image>"

#: ``labels`` value of positions the LLM loss skips (everything but assistant turns).
IGNORE_INDEX = -100

#: ``label_groups`` of a position (``Turn.group`` on the data side): ordinary text, a VQ cognition answer, a
#: pixel cognition answer. The model reports ``loss/vq`` and ``loss/px`` over the last two.
LABEL_GROUP_TEXT, LABEL_GROUP_VQ, LABEL_GROUP_PX = 0, 1, 2

__all__ = [
    "BOS_TOKEN",
    "END_HEADER_TOKEN",
    "END_OF_TEXT_TOKEN",
    "EOT_TOKEN",
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "LABEL_GROUP_PX",
    "LABEL_GROUP_TEXT",
    "LABEL_GROUP_VQ",
    "PAD_TOKEN",
    "RESERVED_0_TOKEN",
    "START_HEADER_TOKEN",
]
