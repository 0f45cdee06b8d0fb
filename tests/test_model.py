"""Model: real timm DINOv3 + open_clip text tower (shrunken), loss, weights from local files."""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from chexdino.errors import WeightsError
from chexdino.model import PatchwiseConv2d, build_model, contrastive_loss, patchify_as_matmul


def quiet_build(cfg, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg, **kw)


def test_full_size_architecture_matches_spec():
    """ViT-B/16 DINOv3 gives a 768-d CLS feature, projected by one Linear to CLIP's 512."""
    model = build_model({"vision": {"random_init": True}, "text": {"random_init": True}},
                        load_weights=False)
    assert model.visual.num_features == 768
    assert model.visual.global_pool == "token"
    assert isinstance(model.visual_proj, torch.nn.Linear)
    assert (model.visual_proj.in_features, model.visual_proj.out_features) == (768, 512)
    assert model.text.width == 512 and model.text.context_length == 77
    assert model.text.text_projection.shape == (512, 512)
    # OpenAI weights need QuickGELU in the text tower's MLP.
    act = model.text.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"
    assert math.isclose(model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)
    # The 16x16 patch embedding runs as a matrix product under timm's own parameter names.
    assert isinstance(model.visual.patch_embed.proj, PatchwiseConv2d)
    assert model.visual.state_dict()["patch_embed.proj.weight"].shape == (768, 3, 16, 16)


def test_shapes_and_unit_norm(tiny_model_cfg):
    model = quiet_build(tiny_model_cfg)
    images = torch.randn(3, 3, 32, 48)
    tokens = torch.randint(1, 1000, (3, 77))
    img, txt, scale = model(images, tokens)
    assert img.shape == (3, 32) and txt.shape == (3, 32)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scale.item() == pytest.approx(1 / 0.07)


def _conv_twin(proj: torch.nn.Conv2d) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(proj.in_channels, proj.out_channels, proj.kernel_size, proj.stride)
    conv.load_state_dict(proj.state_dict())
    return conv


@pytest.mark.parametrize("size", [(32, 48), (35, 50)])
def test_patch_embedding_as_matmul_equals_the_convolution(tiny_model_cfg, size):
    """Output and every gradient (input, weight, bias) equal nn.Conv2d's with the same
    parameters; a size the patches do not tile (35 x 50) takes the convolution itself."""
    model = quiet_build(tiny_model_cfg)
    proj = model.visual.patch_embed.proj
    assert isinstance(proj, PatchwiseConv2d) and proj.kernel_size == proj.stride
    conv = _conv_twin(proj)
    torch.nn.init.normal_(conv.bias)
    proj.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, *size, requires_grad=True)
    ours, reference = proj(x), conv(x)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(reference)
    got = torch.autograd.grad(ours, [x, proj.weight, proj.bias], upstream)
    want = torch.autograd.grad(reference, [x, conv.weight, conv.bias], upstream)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_only_non_overlapping_unpadded_convolutions_become_matmuls():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 1, 1), torch.nn.Conv2d(4, 4, 2, 2),
                              torch.nn.Conv2d(4, 4, 2, 2, groups=2))
    assert patchify_as_matmul(net) == 1
    assert [type(m) for m in net] == [torch.nn.Conv2d, PatchwiseConv2d, torch.nn.Conv2d]


def test_random_init_must_be_explicit(tiny_model_cfg):
    tiny_model_cfg["vision"]["random_init"] = False
    with pytest.raises(WeightsError, match="model.vision.weights is not set"):
        build_model(tiny_model_cfg)


def test_random_init_warns(tiny_model_cfg):
    with pytest.warns(UserWarning, match="RANDOM INITIALISATION"):
        build_model(tiny_model_cfg)


def test_contrastive_loss_is_symmetric_infonce():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(5, 8), dim=-1)
    txt = F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = (scale * img @ txt.t()).double()
    i2t = -(logits.log_softmax(1).diag()).mean()
    t2i = -(logits.t().log_softmax(1).diag()).mean()
    assert contrastive_loss(img, txt, scale).item() == pytest.approx(((i2t + t2i) / 2).item(),
                                                                     rel=1e-5)
    # Matching pairs on the diagonal give a lower loss than shuffled pairs.
    assert contrastive_loss(img, img, scale) < contrastive_loss(img, img.roll(1, 0), scale)


def test_logit_scale_clamped_like_clip(tiny_model_cfg):
    model = quiet_build(tiny_model_cfg)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert model.logit_scale.exp().item() == pytest.approx(100.0)


def test_vision_weights_from_safetensors_roundtrip(tiny_model_cfg, tmp_path):
    source = quiet_build(tiny_model_cfg)
    path = tmp_path / "vision.safetensors"
    save_file({k: v.contiguous() for k, v in source.visual.state_dict().items()}, str(path))
    tiny_model_cfg["vision"].update(weights=str(path), random_init=False)
    loaded = quiet_build(tiny_model_cfg)
    for key, value in source.visual.state_dict().items():
        assert torch.equal(loaded.visual.state_dict()[key], value), key


def test_text_weights_from_open_clip_checkpoint(tiny_model_cfg, tmp_path):
    """An open_clip CLIP state dict (visual.* and text keys at top level) loads the text tower."""
    source = quiet_build(tiny_model_cfg)
    state = {k: v for k, v in source.text.state_dict().items()}
    state["visual.proj"] = torch.zeros(3)  # the image half of a CLIP checkpoint is ignored
    state["logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "open_clip.bin"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    tiny_model_cfg["text"].update(weights=str(path), random_init=False)
    loaded = quiet_build(tiny_model_cfg)
    tokens = torch.randint(1, 1000, (2, 77))
    assert torch.equal(loaded.text(tokens), source.text(tokens))


def test_missing_and_mismatched_weights_name_key_and_file(tiny_model_cfg, tmp_path):
    tiny_model_cfg["text"].update(weights=str(tmp_path / "nope.pt"), random_init=False)
    with pytest.raises(WeightsError, match=r"model.text.weights: weights file not found: .*nope"):
        quiet_build(tiny_model_cfg)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, str(wrong))
    tiny_model_cfg["text"].update(weights=None, random_init=True)
    tiny_model_cfg["vision"].update(weights=str(wrong), random_init=False)
    with pytest.raises(WeightsError, match=r"model.vision.weights: .*wrong.safetensors"):
        quiet_build(tiny_model_cfg)


def test_pickled_code_in_weights_is_refused(tiny_model_cfg, tmp_path):
    """Weights load with weights_only=True: a pickle that would run code is rejected."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    tiny_model_cfg["text"].update(weights=str(path), random_init=False)
    with pytest.raises(WeightsError, match="evil.pt"):
        quiet_build(tiny_model_cfg)


def meta_dinov3_state(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rewrite a timm DINOv3 state dict in the layout of Meta's official .pth files.

    Every block gets ``qkv.bias`` and ``qkv.bias_mask`` (key part masked), as in Meta's files;
    for a timm model without q_bias the biases are zero, as in Meta's distilled ViT-B/16.
    """
    meta = {}
    for key, value in timm_state.items():
        no_bias = key.replace("qkv.weight", "q_bias") not in timm_state
        if key.endswith("attn.qkv.weight") and no_bias:
            width = value.shape[0]
            meta[key.replace("weight", "bias")] = torch.zeros(width)
            meta[key.replace("weight", "bias_mask")] = key_masked(width)
        key = key.replace("reg_token", "storage_tokens")
        key = key.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if key.endswith("attn.q_bias"):
            v_bias = timm_state[key.replace("q_bias", "v_bias")]
            meta[key.replace("q_bias", "qkv.bias")] = torch.cat(
                [value, torch.zeros_like(value), v_bias])
            meta[key.replace("q_bias", "qkv.bias_mask")] = key_masked(3 * len(value))
            continue
        if key.endswith("attn.v_bias"):
            continue
        meta[key] = value
    meta["mask_token"] = torch.zeros(1, meta["cls_token"].shape[-1])
    meta["rope_embed.periods"] = torch.ones(4)
    return meta


def key_masked(width: int) -> torch.Tensor:
    """Meta's ``qkv.bias_mask``: ones for the query and value thirds, zeros for the key."""
    mask = torch.ones(width)
    mask[width // 3: 2 * width // 3] = 0
    return mask


@pytest.mark.parametrize("name", ["vit_base_patch16_dinov3", "vit_base_patch16_dinov3_qkvb"])
def test_vision_weights_from_meta_dinov3_pth(tiny_model_cfg, tmp_path, name):
    """Meta's key layout (storage_tokens, ls1.gamma, qkv.bias, bias_mask) loads strictly."""
    tiny_model_cfg["vision"]["name"] = name
    source = quiet_build(tiny_model_cfg)
    with torch.no_grad():
        for p in source.visual.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "dinov3_vitb16_pretrain.pth"
    torch.save(meta_dinov3_state(source.visual.state_dict()), path)
    tiny_model_cfg["vision"].update(weights=str(path), random_init=False)
    loaded = quiet_build(tiny_model_cfg)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.visual(x), source.visual(x), atol=1e-6)


def test_text_weights_from_openai_torchscript(tiny_model_cfg, tmp_path):
    """OpenAI's CLIP files are TorchScript archives: the text tower is read from them."""
    import open_clip

    clip = open_clip.create_model(
        "ViT-B-32-quickgelu", pretrained=None, embed_dim=32,
        text_cfg={"width": 32, "heads": 2, "layers": 1, "context_length": 77,
                  "vocab_size": 49408},
        vision_cfg={"width": 32, "layers": 1, "patch_size": 32, "image_size": 64,
                    "head_width": 16})
    clip.eval()
    tokens = torch.randint(1, 1000, (2, 77))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks
        scripted = torch.jit.trace(clip, (torch.randn(1, 3, 64, 64), tokens[:1]),
                                   check_trace=False)
    path = tmp_path / "ViT-B-32.pt"
    scripted.save(str(path))
    tiny_model_cfg["text"].update(weights=str(path), random_init=False)
    loaded = quiet_build(tiny_model_cfg)
    assert torch.allclose(loaded.text(tokens), clip.encode_text(tokens), atol=1e-5)


def perturbed_vision(tiny_model_cfg):
    """The tiny vision tower with every parameter (biases included) moved off its init."""
    model = quiet_build(tiny_model_cfg)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def test_meta_file_with_attention_biases_is_refused_by_a_model_without_them(
    tiny_model_cfg, tmp_path
):
    """A fine-tuned DINOv3 (non-zero qkv.bias) under vit_base_patch16_dinov3 would lose its
    biases in timm's converter and compute other features: refused, naming the right model."""
    tiny_model_cfg["vision"]["name"] = "vit_base_patch16_dinov3_qkvb"
    source = perturbed_vision(tiny_model_cfg)
    path = tmp_path / "dinov3_finetuned.pth"
    torch.save(meta_dinov3_state(source.visual.state_dict()), path)
    tiny_model_cfg["vision"].update(name="vit_base_patch16_dinov3", weights=str(path),
                                    random_init=False)
    with pytest.raises(WeightsError, match=r"model.vision.weights: .*dinov3_finetuned.pth has "
                       r"non-zero attention biases .*vit_base_patch16_dinov3_qkvb"):
        quiet_build(tiny_model_cfg)
    tiny_model_cfg["vision"]["name"] = "vit_base_patch16_dinov3_qkvb"  # the named fix works
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(quiet_build(tiny_model_cfg).visual(x), source.visual(x), atol=1e-6)


def test_meta_file_with_non_zero_key_biases_is_refused(tiny_model_cfg, tmp_path):
    tiny_model_cfg["vision"]["name"] = "vit_base_patch16_dinov3_qkvb"
    state = meta_dinov3_state(perturbed_vision(tiny_model_cfg).visual.state_dict())
    state["blocks.1.attn.qkv.bias_mask"] = torch.ones_like(state["blocks.1.attn.qkv.bias_mask"])
    state["blocks.1.attn.qkv.bias"][48:96] = 0.5  # an unmasked key bias timm cannot hold
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    tiny_model_cfg["vision"].update(weights=str(path), random_init=False)
    with pytest.raises(WeightsError, match=r"non-zero key biases \(blocks.1.attn.qkv.bias\)"):
        quiet_build(tiny_model_cfg)


def test_good_meta_load_keeps_timms_printout_out_of_the_log(tiny_model_cfg, tmp_path, capfd,
                                                            caplog):
    """timm prints "`q_bias` is not an nn.Parameter" once per block when it skips Meta's zero
    biases: the job log gets one summary line instead."""
    source = perturbed_vision(tiny_model_cfg)
    path = tmp_path / "dinov3_vitb16_pretrain.pth"
    torch.save(meta_dinov3_state(source.visual.state_dict()), path)
    tiny_model_cfg["vision"].update(weights=str(path), random_init=False)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="chexdino.model"):
        quiet_build(tiny_model_cfg)
    out, err = capfd.readouterr()
    assert "nn.Parameter" not in out + err
    summaries = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summaries) == 1
    assert "skipped 2 zero attention biases" in summaries[0]  # one per block of the tiny model


def test_shape_mismatch_names_both_shapes(tiny_model_cfg, tmp_path):
    source = quiet_build(tiny_model_cfg)  # vision width 48
    path = tmp_path / "vision.safetensors"
    save_file({k: v.contiguous() for k, v in source.visual.state_dict().items()}, str(path))
    tiny_model_cfg["vision"]["overrides"]["embed_dim"] = 96
    tiny_model_cfg["vision"].update(weights=str(path), random_init=False)
    with pytest.raises(WeightsError) as caught:
        quiet_build(tiny_model_cfg)
    message = str(caught.value)
    assert "with other shapes (e.g. blocks.0.attn.proj.bias (48,) in the file vs (96,) in the " \
        "model; blocks.0.attn.proj.weight (48, 48) in the file vs (96, 96) in the model" in message


def openai_torchscript_file(path, quick_gelu: bool = True):
    """A TorchScript CLIP file as OpenAI ships ViT-B-32.pt (a shrunken model of that layout)."""
    import open_clip

    clip = open_clip.create_model(
        "ViT-B-32-quickgelu" if quick_gelu else "ViT-B-32", pretrained=None, embed_dim=32,
        text_cfg={"width": 32, "heads": 2, "layers": 1, "context_length": 77,
                  "vocab_size": 49408},
        vision_cfg={"width": 32, "layers": 1, "patch_size": 32, "image_size": 64,
                    "head_width": 16})
    clip.eval()
    tokens = torch.randint(1, 1000, (1, 77))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks
        scripted = torch.jit.trace(clip, (torch.randn(1, 3, 64, 64), tokens), check_trace=False)
    scripted.save(str(path))
    return clip


def test_openai_file_under_a_gelu_text_tower_is_refused(tiny_model_cfg, tmp_path):
    """ViT-B-32 (GELU) has exactly the shapes of OpenAI's QuickGELU weights: it would load and
    compute other features without a word."""
    path = tmp_path / "ViT-B-32.pt"
    openai_torchscript_file(path)
    tiny_model_cfg["text"].update(name="ViT-B-32", weights=str(path), random_init=False)
    with pytest.raises(WeightsError, match=r"ViT-B-32.pt is an OpenAI CLIP file .*QuickGELU.*"
                       r"model.text.name: ViT-B-32-quickgelu"):
        quiet_build(tiny_model_cfg)


def test_open_clip_file_under_a_gelu_text_tower_still_loads(tiny_model_cfg, tmp_path):
    """open_clip's own GELU checkpoints (not OpenAI's) are not refused."""
    tiny_model_cfg["text"]["name"] = "ViT-B-32"
    source = quiet_build(tiny_model_cfg)
    path = tmp_path / "open_clip_gelu.bin"
    torch.save(source.text.state_dict(), path)
    tiny_model_cfg["text"].update(weights=str(path), random_init=False)
    tokens = torch.randint(1, 1000, (2, 77))
    assert torch.equal(quiet_build(tiny_model_cfg).text(tokens), source.text(tokens))
