"""The disk budget's choice of images: least recently used first, never one in use, shared parts
counted once, and no removal that frees nothing."""

from __future__ import annotations

from nomad_rkt_driver.images.gc import ImageUsage, Usage, plan


def image(name: str, last_used: float, *parts: str) -> ImageUsage:
    return ImageUsage(name, last_used, frozenset(parts))


SIZES = {"a1": 100, "b1": 100, "c1": 100, "shared": 300, "d1": 10}


def test_least_recently_used_go_first_until_under_budget() -> None:
    images = [image("c", 3.0, "c1"), image("a", 1.0, "a1"), image("b", 2.0, "b1")]
    assert plan(images, SIZES, 300, ()) == []
    assert plan(images, SIZES, 250, ()) == ["a"]
    assert plan(images, SIZES, 150, ()) == ["a", "b"]
    assert plan(images, SIZES, 1, ()) == ["a", "b", "c"]


def test_images_in_use_are_never_chosen() -> None:
    images = [image("a", 1.0, "a1"), image("b", 2.0, "b1"), image("c", 3.0, "c1")]
    assert plan(images, SIZES, 150, {"a"}) == ["b", "c"]
    assert plan(images, SIZES, 1, {"a", "b", "c"}) == []


def test_ties_in_last_use_are_broken_by_name() -> None:
    images = [image("y", 1.0, "b1"), image("x", 1.0, "a1")]
    assert plan(images, SIZES, 100, ()) == ["x"]


def test_shared_parts_count_once_and_free_with_the_last_holder() -> None:
    # total = a1 + b1 + shared + c1 = 600
    images = [image("a", 1.0, "a1", "shared"), image("b", 2.0, "b1", "shared"), image("c", 3.0, "c1")]
    usage = Usage(images, SIZES)
    assert usage.total == 600
    assert usage.unique("a") == 100 and usage.size("a") == 400
    assert plan(images, SIZES, 500, ()) == ["a"]  # frees a1 only: shared stays with b
    assert plan(images, SIZES, 200, ()) == ["a", "b"]  # b was the last holder of shared


def test_an_image_whose_parts_a_kept_image_holds_is_not_removed() -> None:
    # "a" is least recently used, but all of it is shared with "b", which is in use: removing
    # "a" would free nothing, so the budget takes "c" and leaves "a".
    images = [image("a", 1.0, "shared"), image("b", 2.0, "shared", "b1"), image("c", 3.0, "c1")]
    assert plan(images, SIZES, 1, {"b"}) == ["c"]


def test_without_a_budget_every_unused_image_goes() -> None:
    images = [image("b", 2.0, "shared"), image("a", 1.0, "shared"), image("c", 3.0, "c1")]
    assert plan(images, SIZES, None, {"c"}) == ["a", "b"]
