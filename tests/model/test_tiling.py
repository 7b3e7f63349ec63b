import pytest
import torch
from transformers.image_processing_utils import select_best_resolution

from vlsa_platform.config.model_section import DEFAULT_GRID_PINPOINTS
from vlsa_platform.model.tiling import TileGrid, anyres_token_count, check_pinpoints, plan_grid, tile_image

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    ("hw", "grid"),
    [
        ((336, 336), (1, 1, 336, 336)),
        ((672, 672), (2, 2, 672, 672)),
        ((100, 500), (1, 2, 100, 500)),  # padded, never enlarged
        (
            (336, 1008),
            (1, 3, 336, 1008),
        ),  # LLaVA-NeXT's 1x3 pinpoint: no shrink (the issue; was 1x2 at 224x672)
        ((1008, 336), (3, 1, 1008, 336)),
        ((700, 100), (3, 1, 700, 100)),
        ((2000, 1000), (2, 1, 672, 336)),  # larger than every grid: shrunk, aspect kept, least padding
        ((337, 336), (2, 1, 337, 336)),
        ((400, 700), (2, 2, 384, 672)),  # needs 2x3, not listed: shrunk onto 2x2
        ((2679, 1339), (2, 1, 672, 336)),  # the effective-area rule picks 3x1; the shrunk image fits 2x1
    ],
)
def test_plan_grid_picks_the_best_fitting_pinpoint(hw, grid):
    g = plan_grid(*hw, tile=336)
    assert (g.rows, g.cols, g.content_height, g.content_width) == grid
    assert (g.rows, g.cols) in DEFAULT_GRID_PINPOINTS
    # Planning the (shrunk) image again gives the same grid: what data.images relies on.
    assert plan_grid(g.content_height, g.content_width, tile=336) == g


def test_plan_grid_follows_llava_next_select_best_resolution():
    # The grid is transformers' choice among the pinpoints' canvases whenever the image fits one unshrunk.
    for hw in [(336, 336), (100, 500), (500, 100), (336, 1008), (1008, 336), (600, 600), (300, 900)]:
        g = plan_grid(*hw, tile=336)
        canvases = [(r * 336, c * 336) for r, c in DEFAULT_GRID_PINPOINTS]
        assert (g.canvas_height, g.canvas_width) == tuple(select_best_resolution(hw, canvases))


def test_plan_grid_uses_only_the_listed_grids():
    # Without 1x3 a 1008 px wide strip is shrunk onto 1x2, as the old 2x2 cap did.
    g = plan_grid(336, 1008, 336, [(1, 1), (1, 2), (2, 1), (2, 2)])
    assert (g.rows, g.cols, g.content_height, g.content_width) == (1, 2, 224, 672)
    # A list without 1x1 pads a small image to a listed grid (as LLaVA-NeXT's own list does).
    g = plan_grid(100, 100, 336, [(1, 2), (2, 1)])
    assert (g.rows, g.cols) == (1, 2) and (g.content_height, g.content_width) == (100, 100)


def test_plan_grid_rejects_bad_sizes_and_pinpoints():
    with pytest.raises(ValueError, match="positive"):
        plan_grid(0, 10, 336)
    with pytest.raises(ValueError, match="at least 1"):
        plan_grid(10, 10, 336, [(0, 2)])
    with pytest.raises(ValueError, match="empty"):
        plan_grid(10, 10, 336, [])
    with pytest.raises(ValueError, match="repeats"):
        check_pinpoints([(1, 2), (1, 2)])


def test_tiles_reassemble_the_padded_canvas():
    image = torch.rand(3, 50, 70)
    tiles, lowres, grid = tile_image(image, tile=32, mean=MEAN, std=STD, pinpoints=[(1, 1), (2, 3)])
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


def test_anyres_counts_on_the_strip_grids():
    # 1x3: 576 base + 24 x 72 features + 24 newlines; 3x1: 72 feature rows, so 72 newlines.
    assert anyres_token_count(plan_grid(336, 1008, 336), 24, newline=True) == 576 + 24 * 72 + 24
    assert anyres_token_count(plan_grid(1008, 336, 336), 24, newline=True) == 576 + 72 * 24 + 72
