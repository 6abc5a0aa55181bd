"""Images people give the pages: one entry per content, each under a name of its own."""

from __future__ import annotations

from ui.resources import ImageInput, distinct_images


def test_two_photos_with_one_name_get_two_names() -> None:
    given = [ImageInput("image.jpg", b"phone one"), ImageInput("image.jpg", b"phone two")]

    names = [image.name for image in distinct_images(given)]

    assert names == ["image.jpg", "image (2).jpg"]


def test_a_name_already_taken_by_the_numbered_form_is_skipped() -> None:
    given = [
        ImageInput("image.jpg", b"a"),
        ImageInput("image (2).jpg", b"b"),
        ImageInput("image.jpg", b"c"),
        ImageInput("photo", b"d"),
        ImageInput("photo", b"e"),
    ]

    names = [image.name for image in distinct_images(given)]

    assert names == ["image.jpg", "image (2).jpg", "image (3).jpg", "photo", "photo (2)"]


def test_the_same_content_twice_is_shown_once_under_its_first_name() -> None:
    given = [ImageInput("a.jpg", b"same"), ImageInput("b.jpg", b"same")]

    assert distinct_images(given) == [ImageInput("a.jpg", b"same")]
