"""Labels that follow colour edges (`stma_cli.inference.edges`), alone and through `frame_result`."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stma_cli.inference.edges import edge_labels
from stma_cli.inference.segmenter import frame_result

HEIGHT, WIDTH = 64, 96
ROWS, COLS = np.mgrid[:HEIGHT, :WIDTH]
DISC = (ROWS - 31) ** 2 + (COLS - 45) ** 2 <= 36  # radius 6: 3 stride-4 cells across


def painted(mask: np.ndarray) -> np.ndarray:
    """A red object on a blue background."""
    return np.where(mask[..., None], np.array([200, 60, 60]), np.array([60, 90, 160])).astype(np.uint8)


def coarse_logits(mask: np.ndarray) -> torch.Tensor:
    """(2, H/4, W/4) logits of background and object from the share of each stride-4 cell the object covers."""
    share = F.avg_pool2d(torch.from_numpy(mask).float()[None, None], 4)[0, 0].clamp(0.02, 0.98)
    return torch.stack([torch.log(1 - share), torch.log(share)])


def upsampled(coarse: torch.Tensor) -> torch.Tensor:
    return F.interpolate(coarse[None], size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


BAR = (COLS >= 45) & (COLS < 48) & (ROWS > 10) & (ROWS < 50)  # 3 pixels wide: under one stride-4 cell


@pytest.mark.parametrize(("shape", "bilinear_at_most", "edges_at_least"), [(DISC, 0.9, 0.99), (BAR, 0.6, 0.75)],
                         ids=["disc", "thin bar"])
def test_small_and_thin_objects_keep_more_of_their_shape(shape: np.ndarray, bilinear_at_most: float,
                                                         edges_at_least: float) -> None:
    """Bilinear labels round a disc 12 pixels across off and cut a bar 3 pixels wide short; the labels that follow
    the colour edges recover them."""
    coarse = coarse_logits(shape)
    bilinear = upsampled(coarse).argmax(0).numpy() == 1
    edges = edge_labels(upsampled(coarse), coarse, torch.from_numpy(painted(shape)), 3).numpy() == 1
    assert iou(bilinear, shape) < bilinear_at_most
    assert iou(edges, shape) > edges_at_least


def test_an_objects_own_pixels_stay_its_own_where_the_frame_shows_no_edge() -> None:
    coarse = coarse_logits(DISC)
    bilinear = upsampled(coarse).argmax(0).numpy() == 1
    flat = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    edges = edge_labels(upsampled(coarse), coarse, torch.from_numpy(flat), 3).numpy() == 1
    assert edges[bilinear].all()


def test_far_from_the_coarse_borders_the_labels_are_the_bilinear_ones() -> None:
    decoy = (ROWS - 31) ** 2 + (COLS - 80) ** 2 <= 36  # an object of the same colour that the logits do not hold
    coarse = coarse_logits(DISC)
    edges = edge_labels(upsampled(coarse), coarse, torch.from_numpy(painted(DISC | decoy)), 3).numpy()
    assert not edges[decoy].any()
    assert (edges[(ROWS - 31) ** 2 + (COLS - 45) ** 2 <= 4] == 1).all()
    assert (edges == 0)[:, :30].all()


def test_radius_zero_gives_the_bilinear_labels() -> None:
    coarse = coarse_logits(DISC)
    edges = edge_labels(upsampled(coarse), coarse, torch.from_numpy(painted(DISC)), 0)
    assert torch.equal(edges, upsampled(coarse).argmax(0))


def test_frame_result_labels_the_frame_by_its_edges_when_given_it() -> None:
    logits = coarse_logits(DISC)[None]
    plain = frame_result(logits, [7], (HEIGHT, WIDTH), (HEIGHT, WIDTH), torch.ones(1))
    edges = frame_result(logits, [7], (HEIGHT, WIDTH), (HEIGHT, WIDTH), torch.ones(1),
                         torch.from_numpy(painted(DISC)), 3)
    assert iou(plain.labels == 7, DISC) < 0.9
    assert iou(edges.labels == 7, DISC) > 0.99
    assert torch.equal(edges.logits, plain.logits)  # the logits written stay the model's, at stride 4
