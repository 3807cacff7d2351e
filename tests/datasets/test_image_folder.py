import multiprocessing

import pytest
import torch

from conftest import write_images
from datasets.images import ImageBatches, ImageFiles, UnreadableImageError, image_files


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_finds_images_in_the_folder_and_its_sub_folders_and_ignores_other_files(tmp_path):
    write_images(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(image_files(tmp_path)) == 6


def test_images_are_resized_centre_cropped_and_scaled_to_minus_one_one(tmp_path):
    dataset = ImageFiles(write_images(tmp_path, 3, size=(30, 20)), image_size=8)
    image = dataset[0]
    assert image.shape == (3, 8, 8)
    assert image.min() >= -1 and image.max() <= 1


def test_each_epoch_is_a_shuffle_of_whole_batches_and_the_tail_is_dropped(tmp_path):
    stream = ImageBatches(ImageFiles(write_images(tmp_path, 7), 8), batch_size=3, seed=0)
    first, second = stream.epoch_order(0), stream.epoch_order(1)
    assert [len(batch) for batch in first] == [3, 3]
    assert len(set(sum(first, []))) == 6
    assert first != second
    take(stream, 3)
    assert stream.state_dict() == {"epoch": 1, "position": 1}


def test_processes_share_the_order_and_each_takes_its_slice_of_every_batch(tmp_path):
    dataset = ImageFiles(write_images(tmp_path, 9), 8)
    whole = ImageBatches(dataset, batch_size=4, seed=3).epoch_order(2)
    shards = [ImageBatches(dataset, batch_size=4, seed=3, shard=(rank, 2)).epoch_order(2) for rank in (0, 1)]
    assert [a + b for a, b in zip(*shards, strict=True)] == whole
    with pytest.raises(ValueError, match="does not divide evenly over 3 processes"):
        ImageBatches(dataset, batch_size=4, seed=3, shard=(0, 3))


def test_a_restored_state_continues_with_exactly_the_same_batches(tmp_path):
    dataset = ImageFiles(write_images(tmp_path, 7), 8)
    stream = ImageBatches(dataset, batch_size=2, seed=5)
    take(stream, 4)
    state = stream.state_dict()
    expected = take(stream, 5)  # crosses an epoch boundary
    resumed = ImageBatches(dataset, batch_size=2, seed=5)
    resumed.load_state_dict(state)
    for a, b in zip(expected, take(resumed, 5), strict=True):
        assert torch.equal(a, b)


def test_worker_processes_decode_the_same_batches(tmp_path):
    dataset = ImageFiles(write_images(tmp_path, 6), 8)
    in_process = take(ImageBatches(dataset, batch_size=2, seed=1, workers=0), 4)
    with_workers = take(ImageBatches(dataset, batch_size=2, seed=1, workers=2), 4)
    for a, b in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_named_in_one_line(tmp_path, workers):
    write_images(tmp_path, 2, nested=False)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    stream = ImageBatches(ImageFiles(tmp_path, 8), batch_size=3, seed=0, workers=workers)
    with pytest.raises(UnreadableImageError) as error:
        next(stream)
    assert str(error.value) == f"{tmp_path / 'broken.png'}: not a readable image (UnidentifiedImageError)"


def test_fewer_images_than_a_batch_are_refused(tmp_path):
    with pytest.raises(ValueError, match="2 images are fewer than one batch of 4"):
        ImageBatches(ImageFiles(write_images(tmp_path, 2), 8), batch_size=4, seed=0)


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        image_files(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        image_files(tmp_path / "missing")


def test_close_stops_the_worker_processes_at_once(tmp_path):
    others = set(multiprocessing.active_children())  # an earlier test's, still going
    stream = ImageBatches(ImageFiles(write_images(tmp_path, 8), 8), batch_size=2, seed=0, workers=2)
    next(stream)
    workers = [child for child in multiprocessing.active_children() if child not in others]
    stream.close()
    assert len(workers) == 2 and not any(worker.is_alive() for worker in workers)
