"""The SA-Perceiver's spatial locality (paper §3.1, Eq. 1) and its fixed output length."""

import torch

from vlsa_platform.model.sa_perceiver import SAPerceiver, locality_mask


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
