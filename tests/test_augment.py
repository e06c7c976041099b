"""Augmentation of training batches: each one's effect on known images, its probability, and that it is
drawn from the run's generator alone."""

import torch

from convlens.augment import (alternating, augment, erase_boxes, flip_parity, random_crop, random_erase,
                              random_flip)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 256, h: int = 12, w: int = 10, c: int = 1) -> torch.Tensor:
    """Random images without zeros, so that the zeros a crop brings in are its own."""
    return torch.randint(1, 256, (n, c, h, w), generator=gen(1), dtype=torch.uint8)


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C, H, W) moved down dy and right dx pixels, the uncovered border zero (the reference crop)."""
    out = torch.zeros_like(x)
    h, w = x.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def test_random_crop_is_an_exact_shift_within_the_padding():
    x = images(400, c=3)
    out = random_crop(x, 2, 1.0, gen())
    seen = {}
    for a, b in zip(x, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(shifted(a, dy, dx), b)]
        assert len(matches) == 1                                     # exactly one shift of at most 2 pixels
        seen[matches[0]] = seen.get(matches[0], 0) + 1
    assert len(seen) == 25 and min(seen.values()) >= 4              # every offset, about 400 / 25 = 16 each
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_random_crop_probability_and_identity():
    x = images(2000)
    kept = (random_crop(x, 3, 0.3, gen()) == x).flatten(1).all(1).float().mean().item()
    # not cropped with probability 0.7, plus the 1/49 of crops that draw the centre
    assert abs(kept - (0.7 + 0.3 / 49)) < 0.04
    assert torch.equal(random_crop(x, 3, 0.0, gen()), x)


def test_random_flip_mirrors_exactly_with_its_probability():
    x = images(2000)
    out = random_flip(x, 0.25, gen())
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())                             # each image: itself or its mirror image
    assert abs(mirrored.float().mean().item() - 0.25) < 0.03


def test_erase_boxes_lie_in_the_image_with_the_areas_and_ratios_asked_for():
    h, w, n = 28, 28, 5000
    top, left, eh, ew = erase_boxes(n, h, w, (0.02, 0.4), (0.3, 3.3), gen()).T
    assert bool((top >= 0).all() and (left >= 0).all() and (top + eh <= h).all() and (left + ew <= w).all())
    area = (eh * ew).float() / (h * w)
    # sides are whole pixels: allow half a pixel on each side of the drawn rectangle
    slack = (eh + ew).float() / 2 / (h * w)
    assert bool((area >= 0.02 - slack).all() and (area <= 0.4 + slack + 1 / (h * w)).all())
    assert area.min() < 0.03 and area.max() > 0.35                 # the whole range is drawn
    ratio = eh.float() / ew
    assert ratio.min() > 0.3 * 0.6 and ratio.max() < 3.3 / 0.6     # ±0.5 px of rounding on a side of ≥ 3 px
    assert abs(ratio.log().mean().item()) < 0.1                    # tall as often as wide


def test_random_erase_fills_one_rectangle_with_its_probability():
    x = torch.zeros(3000, 1, 28, 28, dtype=torch.uint8)
    out = random_erase(x, 0.4, (0.02, 0.4), (0.3, 3.3), gen())
    changed = out[:, 0] != 0
    hit = changed.flatten(1).any(1)
    assert abs(hit.float().mean().item() - 0.4) < 0.03
    for m in changed[hit][:200]:
        rows, cols = torch.nonzero(m, as_tuple=True)
        box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.95                             # one rectangle (a random pixel may be 0)
        assert 0.015 <= box.numel() / 784 <= 0.45


def test_augment_is_drawn_from_the_generator_alone_and_adds_nothing_when_off():
    x = images(64)
    settings = dict(crop=1.0, crop_pad=2, flip=0.5, erase=0.5)
    torch.manual_seed(123)
    a = augment(x, gen(7), **settings)
    torch.manual_seed(456)                                         # the global generator plays no part
    b = augment(x, gen(7), **settings)
    assert torch.equal(a, b) and not torch.equal(a, x)
    g = gen(7)
    assert torch.equal(augment(x, g), x) and torch.equal(g.get_state(), gen(7).get_state())   # nothing drawn


def test_the_ranks_shares_of_a_batch_draw_what_one_process_draws():
    """Under torchrun rank r holds images r, r + world, … of each step's batch; drawn for the whole batch,
    the shares' augmentations interleave to one process's, and every rank's generator ends where its does."""
    x = images(63)                                                  # a batch that does not split evenly
    settings = dict(crop=0.8, crop_pad=2, flip=0.5, erase=0.5)
    one_gen = gen(7)
    one = augment(x, one_gen, **settings)
    for world in (2, 3):
        shares, gens = [], [gen(7) for _ in range(world)]
        for rank, g in enumerate(gens):
            part = slice(rank, None, world)
            shares.append(augment(x[part], g, **settings, batch=len(x), part=part))
        merged = torch.empty_like(one)
        for rank, share in enumerate(shares):
            merged[rank::world] = share
        assert torch.equal(merged, one)
        assert all(torch.equal(g.get_state(), one_gen.get_state()) for g in gens)
    # drawn for its own images only (as before), rank 1's share would copy rank 0's draws image for image
    naive = [augment(x[r::2][:31], gen(7), **settings) for r in (0, 1)]
    assert not torch.equal(naive[1], one[1::2][:31])


def test_alternating_flip_shows_each_image_both_ways_every_two_epochs():
    parity = flip_parity(4000, 0.5, seed=3)
    assert torch.equal(parity, flip_parity(4000, 0.5, seed=3))                # the run's seed alone decides it
    assert not torch.equal(parity, flip_parity(4000, 0.5, seed=4))
    assert 0.47 < parity.float().mean() < 0.53 and 0.17 < flip_parity(4000, 0.2, seed=3).float().mean() < 0.23
    epochs = [alternating(parity, epoch) for epoch in (1, 2, 3, 4)]
    assert torch.equal(epochs[0], parity) and torch.equal(epochs[2], parity)
    assert torch.equal(epochs[1], ~parity) and torch.equal(epochs[3], ~parity)
    # fresh coins, by contrast, show about half the images one way only in two epochs
    coins = [torch.rand(4000, generator=gen(e)) < 0.5 for e in (1, 2)]
    assert 0.47 < (coins[0] == coins[1]).float().mean() < 0.53


def test_augment_mirrors_the_images_it_is_told_to_and_draws_no_coin_for_them():
    x, mirror = images(64), alternating(flip_parity(64, 0.5, seed=5), 2)
    g = gen(7)
    out = augment(x, g, flip=0.5, mirror=mirror)
    assert torch.equal(g.get_state(), gen(7).get_state())                   # nothing drawn
    for image, before, mirrored in zip(out, x, mirror):
        assert torch.equal(image, before.flip(2) if mirrored else before)
    cropped = random_crop(x, 2, 1.0, gen(7))                                 # a crop still draws what it drew
    both = augment(x, gen(7), crop=1.0, crop_pad=2, flip=0.5, mirror=mirror)
    assert torch.equal(both, torch.where(mirror.view(-1, 1, 1, 1), cropped.flip(3), cropped))
