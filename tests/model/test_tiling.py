import pytest
import torch

from vlsa_platform.model.tiling import TileGrid, anyres_token_count, plan_grid, tile_image

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    ("hw", "grid"),
    [
        ((336, 336), (1, 1, 336, 336)),
        ((672, 672), (2, 2, 672, 672)),
        ((100, 500), (1, 2, 100, 500)),  # padded, never enlarged
        ((336, 1008), (1, 2, 224, 672)),  # three tiles wide > max_grid: shrunk to fit, aspect kept
        ((2000, 1000), (2, 1, 672, 336)),
        ((337, 336), (2, 1, 337, 336)),
    ],
)
def test_plan_grid(hw, grid):
    g = plan_grid(*hw, tile=336, max_grid=(2, 2))
    assert (g.rows, g.cols, g.content_height, g.content_width) == grid
    assert g.rows <= 2 and g.cols <= 2


def test_plan_grid_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        plan_grid(0, 10, 336)
    with pytest.raises(ValueError, match="max_grid"):
        plan_grid(10, 10, 336, (0, 2))


def test_tiles_reassemble_the_padded_canvas():
    image = torch.rand(3, 50, 70)
    tiles, lowres, grid = tile_image(image, tile=32, mean=MEAN, std=STD, max_grid=(2, 3))
    assert (grid.rows, grid.cols) == (2, 3)
    assert tiles.shape == (6, 3, 32, 32) and lowres.shape == (3, 32, 32)
    canvas = tiles.view(2, 3, 3, 32, 32).permute(2, 0, 3, 1, 4).reshape(3, 64, 96)
    expected = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(canvas[:, :50, :70], expected)
    # Padding is the mean colour: zero after normalisation.
    assert canvas[:, 50:].abs().max() == 0 and canvas[:, :, 70:].abs().max() == 0


def test_anyres_counts_match_llava_next():
    # LLaVA-NeXT at 672x672 with CLIP-L/14-336: 576 base + 4 * 576 tiles, plus 48 newline tokens.
    grid = plan_grid(672, 672, 336)
    assert anyres_token_count(grid, 24, newline=False) == 2880
    assert anyres_token_count(grid, 24, newline=True) == 2928
    # Unpadding drops the feature rows that are only padding: 336x672 content in a 2x2 canvas -> 24 rows.
    wide = TileGrid(rows=2, cols=2, content_height=336, content_width=672, tile=336)
    assert anyres_token_count(wide, 24, newline=True) == 576 + 24 * 48 + 24
