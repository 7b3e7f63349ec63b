"""LoRA on the LLM through peft: only adapters train inside the LLM, and merging keeps the function."""

import torch

from vlsa_platform.model.lora import LoraSettings, apply_lora, has_lora, merge_lora
from vlsa_platform.model.parts import count_by_part, frozen_state, part_of, set_trainable

from .builders import make_batch, random_images, tiny_model


def test_lora_trains_only_adapters_in_the_llm():
    model = apply_lora(tiny_model(recon=False), LoraSettings(r=4, alpha=8, dropout=0.0))
    assert has_lora(model)
    set_trainable(model, ["llm", "projector", "sa_perceiver"])
    llm_trainable = [n for n, p in model.named_parameters() if p.requires_grad and part_of(n) == "llm"]
    assert llm_trainable and all("lora_" in n for n in llm_trainable)
    counts = count_by_part(model)
    hidden, layers = model.config.text_config.hidden_size, model.config.text_config.num_hidden_layers
    assert 0 < counts["llm"][1] < counts["llm"][0]
    assert counts["llm"][1] == sum(p.numel() for n, p in model.named_parameters() if n in llm_trainable)
    assert counts["llm"][1] % (4 * layers) == 0 and hidden > 0

    frozen = frozen_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch, _ = make_batch(model.config, random_images([(112, 112)]))
    for _ in range(2):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    for name, before in frozen.items():
        assert torch.equal(model.get_parameter(name), before), name


def test_merge_keeps_logits():
    model = apply_lora(tiny_model(recon=False), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # make the adapters non-trivial (lora_B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    model.eval()
    batch, _ = make_batch(model.config, random_images([(112, 112)]))
    with torch.no_grad():
        before = model(**batch).logits
        merge_lora(model)
        after = model(**batch).logits
    assert not has_lora(model)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
