"""Model anatomy (model.anatomy): the decoder layers, attentions and final norm are found through the
transformers API, and backbone + unembedding reproduce the model's own logits."""

from __future__ import annotations

import pytest
import torch

from tokenscope.model.anatomy import Unembedding, backbone, check_unembedding, model_anatomy

from helpers.tiny_models import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_anatomy_found_through_transformers_api(tiny_loaded, arch):
    model, _ = tiny_loaded(arch)
    anatomy = model_anatomy(model)
    assert anatomy.n_layers == model.config.get_text_config().num_hidden_layers
    assert len(anatomy.attentions) == anatomy.n_layers
    assert len(anatomy.final_norm) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_unembedding_reproduces_model_logits(tiny_loaded, arch):
    model, tokenizer = tiny_loaded(arch)
    unembed = Unembedding(model)
    check_unembedding(model, unembed, len(tokenizer))
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        torch.testing.assert_close(
            unembed(backbone(model)(input_ids=ids).last_hidden_state), model(input_ids=ids).logits.float()
        )
