from pathlib import Path

import pytest
import torch

from hcr_model.data.build import read_manifest
from hcr_model.data.photos import DatasetNotBuiltError, PhotoRecord, TileDataset, load_photos

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "photos"
NAMES = ["astronaut.jpg", "chelsea.jpg", "coffee.png", "rocket.jpg", "china.jpg", "flower.jpg"]
R = 64  # small tiles keep the tests fast; the code path is the same as R = 256


def _record(name: str, category: str) -> PhotoRecord:
    return PhotoRecord(
        photo_id=Path(name).stem,
        package="fixture",
        path=name,
        member="",
        sha256="0" * 64,
        license="CC0-1.0",
        category=category,
        split="train",
        file=FIXTURES / name,
    )


@pytest.fixture(scope="module")
def records():
    return [_record(name, "space" if name in ("astronaut.jpg", "rocket.jpg") else "scene") for name in NAMES]


def test_tiles_shape_dtype_range(records):
    for augment in (True, False):
        dataset = TileDataset(records, resolution=R, augment=augment, tiles_per_photo=3)

        assert len(dataset) == 3 * len(records)
        for index in range(len(dataset)):
            image = dataset[index]["image"]
            assert image.shape == (3, R, R)
            assert image.dtype == torch.float32
            assert float(image.min()) >= 0.0
            assert float(image.max()) <= 1.0


def test_tiles_carry_photo_index_and_category(records):
    dataset = TileDataset(records, resolution=R, augment=False, tiles_per_photo=2)

    item = dataset[7]

    assert item["photo_index"] == 3
    assert item["category"] == "space"


def test_fixed_tiles_deterministic(records):
    first = TileDataset(records, resolution=R, augment=False, tiles_per_photo=5)
    second = TileDataset(records, resolution=R, augment=False, tiles_per_photo=5)

    for index in range(len(first)):
        assert torch.equal(first[index]["image"], second[index]["image"])


def test_fixed_tiles_differ_within_photo(records):
    dataset = TileDataset(records, resolution=R, augment=False, tiles_per_photo=3)

    tiles = [dataset[index]["image"] for index in range(3)]  # astronaut: centre, two corners

    assert not torch.equal(tiles[0], tiles[1])
    assert not torch.equal(tiles[1], tiles[2])


def test_fixed_centre_tile_matches_resize(records):
    # Tile 0 is the full centre square; chelsea is 451 x 300 px.
    dataset = TileDataset(records[1:2], resolution=300, augment=False, tiles_per_photo=1)
    photo = dataset._photo(0).float() / 255.0

    expected = photo[:, :, 75:375]

    assert torch.allclose(dataset[0]["image"], expected)


def test_augment_repeats_within_epoch(records):
    dataset = TileDataset(records, resolution=R, augment=True, seed=3)
    again = TileDataset(records, resolution=R, augment=True, seed=3)

    assert torch.equal(dataset[5]["image"], again[5]["image"])
    assert torch.equal(dataset[5]["image"], dataset[5]["image"])


def test_augment_changes_with_epoch_and_seed(records):
    dataset = TileDataset(records, resolution=R, augment=True, seed=3)
    before = dataset[5]["image"]

    dataset.set_epoch(1)
    after_epoch = dataset[5]["image"]
    other_seed = TileDataset(records, resolution=R, augment=True, seed=4)[5]["image"]

    assert not torch.equal(before, after_epoch)
    assert not torch.equal(before, other_seed)


def test_small_photo_upsampled(records):
    # coffee.png is 192 x 128 px, smaller than the tile.
    dataset = TileDataset([records[2]], resolution=256, augment=True, tiles_per_photo=2)

    for index in range(2):
        assert dataset[index]["image"].shape == (3, 256, 256)


def test_preload_fills_cache(records):
    dataset = TileDataset(records, resolution=R)

    dataset.preload()

    assert sorted(dataset._cache) == list(range(len(records)))
    assert dataset._cache[0].dtype == torch.uint8


def test_index_out_of_range(records):
    dataset = TileDataset(records, resolution=R, tiles_per_photo=2)

    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_invalid_arguments_rejected(records):
    with pytest.raises(ValueError, match="at least one photo"):
        TileDataset([])
    with pytest.raises(ValueError, match="tiles_per_photo"):
        TileDataset(records, tiles_per_photo=0)


def test_load_photos_missing_cache(tmp_path):
    with pytest.raises(DatasetNotBuiltError, match="hcr data build") as error:
        load_photos("train", cache=tmp_path)

    assert str(tmp_path) in str(error.value)


def test_load_photos_invalid_split(tmp_path):
    with pytest.raises(ValueError, match="invalid split 'training'"):
        load_photos("training", cache=tmp_path)


def test_load_photos_from_built_cache(tmp_path):
    # load_photos checks only that the cached files exist.
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    rows = read_manifest()
    for row in rows:
        (photos / f"{row['photo_id']}.jpg").touch()

    train = load_photos("train", cache=tmp_path)
    everything = load_photos(cache=tmp_path)

    assert len(everything) == len(rows)
    assert len(train) == sum(row["split"] == "train" for row in rows)
    assert {record.split for record in train} == {"train"}
    assert train[0].file == photos / f"{train[0].photo_id}.jpg"


def test_load_photos_names_missing_file(tmp_path):
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    rows = [row for row in read_manifest() if row["split"] == "val"]
    for row in rows[1:]:
        (photos / f"{row['photo_id']}.jpg").touch()

    with pytest.raises(DatasetNotBuiltError, match=rows[0]["photo_id"]):
        load_photos("val", cache=tmp_path)
