import numpy as np
import pandas as pd
import pytest
import torch

from dermdx.data.meta import MetaSchema, encode_meta, fit_meta_schema, missing_meta
from dermdx.models import create_model


def frame(**columns):
    return pd.DataFrame(columns)


def test_schema_keeps_frequent_sites_and_scales_age() -> None:
    schema = fit_meta_schema(frame(age=[20, 40, 60, np.nan] * 3, sex=["male"] * 12, site=["back"] * 10 + ["ear", ""]), min_site_count=5)
    assert schema.sites == ["back"] and schema.age_mean == pytest.approx(40.0)
    assert schema.dim == len(schema.feature_names()) == 2 + 3 + 2


def test_encoding_marks_missing_values_instead_of_inventing_them() -> None:
    schema = MetaSchema(age_mean=50, age_std=10, sites=["back", "face"])
    encoded = encode_meta(frame(age=[60, np.nan], sex=["female", "unknown"], site=["face", "scalp"]), schema)
    names = schema.feature_names()
    row = dict(zip(names, encoded[0], strict=True))
    assert row["age_z"] == pytest.approx(1.0) and row["age_missing"] == 0 and row["sex_female"] == 1 and row["site_face"] == 1
    row = dict(zip(names, encoded[1], strict=True))
    assert row["age_missing"] == 1 and row["sex_missing"] == 1 and row["site_missing"] == 1 and row["age_z"] == 0
    assert np.array_equal(missing_meta(schema)[0], encoded[1] * np.array([n.endswith("missing") for n in names]))


@pytest.mark.parametrize(("column", "value", "message"), [("age", "forty", "age 'forty' is not a number"), ("sex", "m", "sex 'm' is not one of")])
def test_bad_metadata_names_the_row(column, value, message) -> None:
    values = {"age": [30, 30], "sex": ["male", "male"], "site": ["back", "back"]}
    values[column][1] = value
    with pytest.raises(ValueError, match=f"row 2: {message}"):
        encode_meta(frame(**values), MetaSchema(sites=["back"]))


@pytest.mark.parametrize("fusion", ["concat", "metablock"])
def test_fusion_model_uses_metadata_and_runs_without_it(fusion) -> None:
    torch.manual_seed(0)
    schema = MetaSchema(sites=["back", "face"])
    model = create_model("test_efficientnet", num_classes=3, meta_dim=schema.dim, fusion=fusion)
    model.set_absent_meta(torch.from_numpy(missing_meta(schema)[0]))
    model.eval()
    image = torch.randn(2, 3, 32, 32)
    meta = torch.from_numpy(encode_meta(frame(age=[80, 20], sex=["male", "female"], site=["back", "face"]), schema))
    if fusion == "metablock":
        with torch.no_grad():
            plain = model.classifier(model.image_features(image))
            assert torch.allclose(model(image, meta), plain), "MetaBlock starts as the plain image classifier"
            torch.nn.init.normal_(model.gate.weight)  # as after training: metadata now re-weights features
            torch.nn.init.normal_(model.shift.weight, std=0.1)
    with torch.no_grad():
        with_meta, without = model(image, meta), model(image)
        absent = model(image, torch.from_numpy(missing_meta(schema, 2)))
    assert with_meta.shape == without.shape == (2, 3)
    assert not torch.allclose(with_meta, without)
    assert torch.allclose(without, absent)
    with pytest.raises(ValueError, match=r"meta must have shape \(2, "):
        model(image, meta[:, :3])


def test_unknown_fusion_is_named() -> None:
    with pytest.raises(ValueError, match="unknown fusion 'gated'"):
        create_model("test_efficientnet", num_classes=3, meta_dim=4, fusion="gated")


def test_metablock_gate_learns_from_its_zero_start() -> None:
    torch.manual_seed(0)
    schema = MetaSchema(sites=["back", "face"])
    model = create_model("test_efficientnet", num_classes=3, meta_dim=schema.dim, fusion="metablock")
    meta = torch.from_numpy(encode_meta(frame(age=[80, 20], sex=["male", "female"], site=["back", "face"]), schema))
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32), meta), torch.tensor([0, 2]))
    loss.backward()
    assert model.gate.weight.grad.abs().sum() > 0 and model.shift.weight.grad.abs().sum() > 0


def test_site_names_are_normalised_and_unknown_ones_named() -> None:
    from dermdx.data.meta import unknown_sites

    schema = MetaSchema(sites=["back", "lower extremity"])
    encoded = encode_meta(frame(age=[40, 40, 40], sex=["male"] * 3, site=["Lower Limbs", "back ", "leg"]), schema)
    site_columns = encoded[:, -3:]  # back, lower extremity, missing
    assert site_columns.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert unknown_sites(frame(age=[1, 2], sex=["", ""], site=["leg", "lower limbs"]), schema) == ["leg"]


def test_field_dropout_hides_whole_fields_one_at_a_time(tmp_path, jpeg) -> None:
    from dermdx.data.dataset import ImageDataset
    from dermdx.data.manifest import Manifest

    for k in range(2):
        jpeg(tmp_path / f"img{k}.jpg", seed=k)
    rows = frame(image=["img0.jpg", "img1.jpg"], image_id=["img0", "img1"], label=["mel", "nv"], lesion_id=["a", "b"], patient_id=["a", "b"],
                 centre=["x", "x"], modality=["dermoscopy"] * 2, age=[70.0, 30.0], sex=["male", "female"], site=["back", "face"])
    schema = MetaSchema(age_mean=50, age_std=10, sites=["back", "face"])
    columns = schema.field_columns()
    assert [columns[f] for f in ("age", "sex", "site")] == [slice(0, 2), slice(2, 5), slice(5, schema.dim)]
    meta, absent = encode_meta(rows, schema), missing_meta(schema)[0]

    def dataset(chance: float) -> ImageDataset:
        return ImageDataset(Manifest(rows, tmp_path), lambda image: torch.zeros(3, 4, 4), ["mel", "nv"], meta=meta,
                            absent_meta=absent, field_dropout=chance, field_columns=tuple(columns.values()))

    assert np.array_equal(dataset(0.0)[0]["meta"].numpy(), meta[0])
    assert np.array_equal(dataset(1.0)[0]["meta"].numpy(), absent)
    torch.manual_seed(0)
    seen = {tuple(np.array_equal(dataset(0.5)[0]["meta"].numpy()[c], absent[c]) for c in columns.values()) for _ in range(60)}
    assert (True, False, False) in seen and (False, True, True) in seen, "each field is hidden on its own"
    for c in columns.values():
        # A field is either all given or all absent, never half of each.
        assert all(np.array_equal(m[c], meta[0][c]) or np.array_equal(m[c], absent[c]) for m in (dataset(0.5)[0]["meta"].numpy() for _ in range(20)))
    with pytest.raises(ValueError, match="field_dropout needs absent_meta and field_columns"):
        ImageDataset(Manifest(rows, tmp_path), lambda image: torch.zeros(3, 4, 4), meta=meta, field_dropout=0.2)
    with pytest.raises(ValueError, match="field_dropout is a chance between 0 and 1, got 1.5"):
        dataset(1.5)
