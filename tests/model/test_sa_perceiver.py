"""The SA-Perceiver's spatial locality (paper §3.1, Eq. 1) and its fixed output length."""

import pytest
import torch

from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.sa_perceiver import SAPerceiver, locality_mask
from vlsa_platform.model.tiling import plan_grid


def _perceiver(side=4, d=16):
    torch.manual_seed(0)
    return SAPerceiver(d, side)


def test_mask_cells():
    side, rows, cols = 4, 2, 3
    mask = locality_mask([(rows, cols)], side)[0]
    assert mask.shape == (side * side + 1, rows * cols * side * side)
    # Every low-res token sees exactly one hi-res token per tile position of its cell: rows * cols of them.
    assert torch.all(mask[:-1].sum(1) == rows * cols)
    # Each hi-res token belongs to exactly one cell; the global query sees all.
    assert torch.all(mask[:-1].sum(0) == 1)
    assert torch.all(mask[-1] == 1)


def test_cross_attention_is_local_and_query_is_global():
    side, d = 4, 16
    net = _perceiver(side, d)
    grid = (2, 2)
    v_lo = torch.randn(1, side * side, d)
    v_hi = torch.randn(1, 4 * side * side, d)
    base = net.cross_attend(v_lo, v_hi, [grid])
    mask = locality_mask([grid], side)[0]
    token = 5  # low-res cell (1, 1)
    outside = mask[token] == 0
    perturbed = v_hi.clone()
    perturbed[0, outside] += 10 * torch.randn(int(outside.sum()), d)
    out = net.cross_attend(v_lo, perturbed, [grid])
    torch.testing.assert_close(out[0, token], base[0, token], rtol=0, atol=0)
    assert not torch.allclose(out[0, -1], base[0, -1])  # the global query sees the change
    # ...and a change inside the cell does reach the token.
    inside = v_hi.clone()
    inside[0, mask[token] == 1] += 10 * torch.randn(4, d)
    assert not torch.allclose(net.cross_attend(v_lo, inside, [grid])[0, token], base[0, token])


def test_cell_geometry_follows_the_image():
    # Hi-res token at canvas position (r, c) belongs to low-res cell (r // rows, c // cols).
    side, rows, cols = 4, 2, 2
    mask = locality_mask([(rows, cols)], side)[0]
    # Top-left patch of the bottom-right tile: canvas (4, 4) -> cell (2, 2) = token 10.
    tile, patch = 3, 0
    assert mask[10, tile * side * side + patch] == 1
    assert mask[:-1, tile * side * side + patch].sum() == 1


def test_output_length_is_fixed_for_any_grid_and_padding_is_ignored():
    side, d = 4, 16
    net = _perceiver(side, d)
    grids = [(1, 1), (2, 2), (1, 2)]
    v_lo = torch.randn(3, side * side, d)
    v_hi = torch.randn(3, 4 * side * side, d)
    v, p = net(v_lo, v_hi, grids)
    assert v.shape == (3, side * side, d) and p.shape == (3, d)
    # Padding tiles (beyond each image's own) do not matter.
    noisy = v_hi.clone()
    noisy[0, side * side :] = 100.0
    noisy[2, 2 * side * side :] = -100.0
    v2, p2 = net(v_lo, noisy, grids)
    torch.testing.assert_close(v2, v)
    torch.testing.assert_close(p2, p)


@pytest.mark.parametrize(("rows", "cols"), [(1, 3), (3, 1), (2, 2), (1, 2)])
def test_mask_maps_each_low_res_cell_to_the_hi_res_tokens_inside_it(rows, cols):
    # Independent geometry: hi-res token (r, c) of the rows*side x cols*side canvas has its centre at
    # ((r + .5) / (rows*side), (c + .5) / (cols*side)) of the image; low-res cell (i, j) spans
    # [i / side, (i + 1) / side) x [j / side, (j + 1) / side) of the same (squashed) canvas.
    side = 4
    mask = locality_mask([(rows, cols)], side)[0]
    for index in range(rows * cols * side * side):
        tile, patch = divmod(index, side * side)
        r = (tile // cols) * side + patch // side
        c = (tile % cols) * side + patch % side
        i = int((r + 0.5) / (rows * side) * side)
        j = int((c + 0.5) / (cols * side) * side)
        assert mask[:-1, index].nonzero().flatten().tolist() == [i * side + j]
    assert torch.all(mask[:-1].sum(1) == rows * cols)  # each cell holds rows x cols hi-res tokens


@pytest.mark.parametrize(("hw", "grid"), [((336, 1008), (1, 3)), ((1008, 336), (3, 1))])
def test_paper_scale_strip_plans_a_three_tile_grid_and_gives_576_tokens(hw, grid):
    config = build_vlsa_config("paper", vision="sa_perceiver", recon=False)
    planned = plan_grid(*hw, config.vision_config.image_size, config.grid_pinpoints)
    assert (planned.rows, planned.cols) == grid and (planned.content_height, planned.content_width) == hw
    side, d = config.patches_per_side, 16  # the paper's 24x24 patch grid; a narrow width keeps it fast
    net = _perceiver(side, d)
    v_lo = torch.randn(1, side * side, d)
    v_hi = torch.randn(1, planned.num_tiles * side * side, d)
    v, p = net(v_lo, v_hi, [grid])
    assert v.shape == (1, 576, d) and p.shape == (1, d)
