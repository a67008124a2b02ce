"""The clinician service through FastAPI's TestClient: round trips, persistence, every bad request,
concurrency, hashed tokens, logs without patient data, migrations and the `dermdx serve` CLI."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from dermdx.checkpoint import file_sha256  # noqa: E402
from dermdx.cli import main  # noqa: E402
from dermdx.inference import DISCLAIMER, Predictor  # noqa: E402
from dermdx.service.app import create_app  # noqa: E402
from dermdx.service.report import CasePredictor  # noqa: E402
from dermdx.service.settings import ServiceSettings  # noqa: E402
from dermdx.service.storage import Base, Storage, hash_token, make_engine, upgrade_database  # noqa: E402


def jpeg_bytes(size: int = 40, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, format="GIF")
    return buffer.getvalue()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_service(model_file: Path, data_dir: Path, **settings) -> SimpleNamespace:
    """An app on ``data_dir`` with an admin and a clinician token (created if the database lacks them)."""
    settings = ServiceSettings(data_dir=data_dir, **settings)
    app = create_app(Predictor.from_checkpoint(model_file, batch_size=1), settings)
    return SimpleNamespace(app=app, settings=settings, storage=app.state.storage)


@pytest.fixture
def service(isic_model_file: Path, tmp_path: Path):
    svc = make_service(isic_model_file, tmp_path / "data")
    with svc.storage.session() as session:
        svc.admin = svc.storage.create_token(session, "admin-1", "admin")
        svc.clinician = svc.storage.create_token(session, "dr-a", "clinician")
    with TestClient(svc.app) as client:
        svc.client = client
        yield svc


def create_case(svc: SimpleNamespace, *, image: bytes | None = None, filename: str = "lesion.jpg", token: str | None = None, **fields) -> object:
    files = {"image": (filename, image if image is not None else jpeg_bytes(), "image/jpeg")}
    data = {"age": "54", "sex": "female", "site": "back"} | {k: str(v) for k, v in fields.items()}
    return svc.client.post("/api/cases", files=files, data=data, headers=auth(token or svc.clinician))


# --------------------------------------------------------------------------- round trip


def test_create_get_list_feedback_round_trip(service, isic_model_file) -> None:
    image = jpeg_bytes(seed=3)
    response = create_case(service, image=image, age=61, sex="male", site="lower extremity")
    assert response.status_code == 201, response.text
    case = response.json()
    report = case["report"]
    assert (case["age"], case["sex"], case["site"], case["created_by"]) == (61, "male", "lower extremity", "dr-a")
    assert report["disclaimer"] == DISCLAIMER
    assert sorted(report["probabilities"]) == sorted(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    assert sum(report["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert [d["class"] for d in report["differential"]] == sorted(report["probabilities"], key=lambda c: -report["probabilities"][c])[:3]
    assert report["predicted"] == case["predicted"] == report["differential"][0]["class"]
    assert report["model"] == {"name": "test_efficientnet", "sha256": file_sha256(isic_model_file), "dermdx_version": report["model"]["dermdx_version"]}
    # The knowledge-base rules give triage and a next step; an uncertain case is never reassured.
    assert report["triage"] in ("urgent referral", "routine referral", "monitor", "reassure")
    assert report["recommendation"]["next step"] and report["recommendation"]["rules"]
    if report["abstention"]["abstain"]:
        assert report["triage"] != "reassure"
    assert report["heatmap"]["method"] == "gradcam" and report["heatmap"]["class"] == report["predicted"]
    assert report["heatmap"]["image"].startswith("data:image/png;base64,")
    low_confidence = max(report["probabilities"].values()) < report["abstention"]["min_confidence"]
    assert report["abstention"]["abstain"] == (low_confidence or bool(report["abstention"]["reasons"]))
    assert case["image_sha256"] == hashlib.sha256(image).hexdigest()

    got = service.client.get(f"/api/cases/{case['id']}", headers=auth(service.clinician)).json()
    assert got["report"] == report
    picture = service.client.get(case["image_url"], headers=auth(service.clinician))
    assert picture.status_code == 200 and picture.content == image and picture.headers["content-type"] == "image/jpeg"

    create_case(service, image=jpeg_bytes(seed=4))
    listed = service.client.get("/api/cases", params={"limit": 1}, headers=auth(service.clinician)).json()
    assert listed["total"] == 2 and len(listed["items"]) == 1 and listed["items"][0]["id"] != case["id"]  # newest first
    second_page = service.client.get("/api/cases", params={"limit": 1, "offset": 1}, headers=auth(service.clinician)).json()
    assert second_page["items"][0]["id"] == case["id"]

    feedback = {"final_diagnosis": "MEL", "agrees": False, "comment": "dermoscopy shows regression"}
    response = service.client.post(f"/api/cases/{case['id']}/feedback", json=feedback, headers=auth(service.clinician))
    assert response.status_code == 201, response.text
    updated = response.json()
    assert updated["final_diagnosis"] == "mel"  # a class name, normalised
    first = {k: v for k, v in updated["feedback"][0].items() if k not in ("id", "created_at")}
    assert first == {"created_by": "dr-a", "final_diagnosis": "mel", "agrees": False, "comment": "dermoscopy shows regression"}
    service.client.post(f"/api/cases/{case['id']}/feedback", json={"agrees": True}, headers=auth(service.clinician))
    free_text = service.client.post(f"/api/cases/{case['id']}/feedback", json={"final_diagnosis": "Lentigo maligna"}, headers=auth(service.admin)).json()
    assert free_text["final_diagnosis"] == "Lentigo maligna" and len(free_text["feedback"]) == 3

    def count(**params) -> int:
        return service.client.get("/api/cases", params=params, headers=auth(service.clinician)).json()["total"]

    assert count(diagnosis="lentigo maligna") == 1 and count(diagnosis="nv") == 0
    assert count(predicted=case["predicted"]) >= 1
    assert count(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == 0
    assert count(since=(datetime.now(UTC) - timedelta(hours=1)).isoformat()) == 2


def test_models_and_health(service, isic_model_file) -> None:
    models = service.client.get("/api/models", headers=auth(service.clinician)).json()
    assert len(models) == 1
    assert models[0]["sha256"] == file_sha256(isic_model_file)
    assert models[0]["classes"] == sorted(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    assert "metrics" in models[0] and models[0]["name"] == "test_efficientnet"
    assert service.client.get("/api/me", headers=auth(service.clinician)).json() == {"name": "dr-a", "role": "clinician"}
    health = service.client.get("/api/health")  # no token needed
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["database"] == "ok"
    spec = service.client.get("/openapi.json").json()
    assert {"/api/cases", "/api/cases/{case_id}", "/api/cases/{case_id}/feedback", "/api/models", "/api/health"} <= set(spec["paths"])


def test_cases_persist_across_a_restart(isic_model_file, tmp_path) -> None:
    first = make_service(isic_model_file, tmp_path / "data")
    with first.storage.session() as session:
        token = first.storage.create_token(session, "dr-b", "clinician")
    with TestClient(first.app) as client:
        case_id = client.post("/api/cases", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, data={"age": "30"}, headers=auth(token)).json()["id"]
        client.post(f"/api/cases/{case_id}/feedback", json={"final_diagnosis": "nv", "agrees": True}, headers=auth(token))
    second = make_service(isic_model_file, tmp_path / "data")  # a new process would do the same
    with TestClient(second.app) as client:
        case = client.get(f"/api/cases/{case_id}", headers=auth(token)).json()
        assert case["final_diagnosis"] == "nv" and case["feedback"][0]["agrees"] is True and case["age"] == 30
        assert client.get(case["image_url"], headers=auth(token)).content == jpeg_bytes()


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("upload", "fields", "status", "message"),
    [
        (None, {}, 422, r"image: no image attached"),
        (("notes.txt", b"age 54, mole on back", "text/plain"), {}, 415, r"not an image .* JPEG or PNG"),
        (("lesion.jpg", b"", "image/jpeg"), {}, 422, r"empty \(0 bytes\)"),
        (("lesion.jpg", jpeg_bytes(64)[:400], "image/jpeg"), {}, 422, r"truncated or corrupt"),
        (("lesion.gif", gif_bytes(), "image/gif"), {}, 415, r"GIF image; upload a JPEG or PNG"),
        (("bomb.png", png_header_only(100_000, 100_000), "image/png"), {}, 413, r"too many pixels"),
        (("big.png", png_header_only(8000, 6000), "image/png"), {}, 413, r"8000x6000 = 48,000,000 pixels, more than the limit of 40,000,000"),
        ("ok", {"age": "forty"}, 422, r"age: Input should be a valid integer.*'forty'"),
        ("ok", {"age": "-5"}, 422, r"age: Input should be greater than or equal to 0"),
        ("ok", {"age": "121"}, 422, r"age: Input should be less than or equal to 120"),
        ("ok", {"sex": "yes"}, 422, r"sex: Input should be 'unknown', 'female' or 'male'"),
        ("ok", {"site": "moon"}, 422, r"site: Input should be .*'scalp'"),
    ],
    ids=["missing-image", "text-file", "empty-file", "truncated-jpeg", "gif", "png-bomb", "too-many-pixels", "age-word", "age-negative", "age-too-high", "bad-sex", "bad-site"],
)
def test_bad_case_uploads_get_a_clear_4xx_and_store_nothing(service, upload, fields, status, message) -> None:
    data = {"age": "54", "sex": "female", "site": "back"} | fields
    files = {"image": ("lesion.jpg", jpeg_bytes(), "image/jpeg") if upload == "ok" else upload} if upload else None
    response = service.client.post("/api/cases", files=files, data=data, headers=auth(service.clinician))
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"]), response.json()
    assert service.client.get("/api/cases", headers=auth(service.clinician)).json()["total"] == 0


def test_a_real_image_above_a_lowered_pixel_limit_is_refused(isic_model_file, tmp_path) -> None:
    svc = make_service(isic_model_file, tmp_path / "data", max_pixels=1000, max_upload_bytes=50_000)
    with svc.storage.session() as session:
        token = svc.storage.create_token(session, "dr-c", "clinician")
    with TestClient(svc.app) as client:
        too_big = client.post("/api/cases", files={"image": ("a.jpg", jpeg_bytes(40), "image/jpeg")}, headers=auth(token))
        assert too_big.status_code == 413 and "40x40 = 1,600 pixels" in too_big.json()["detail"]
        heavy = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(heavy).save(buffer, format="PNG")
        padded = buffer.getvalue() + b"\0" * 60_000  # bytes beyond the file limit, within the request limit
        response = client.post("/api/cases", files={"image": ("a.png", padded, "image/png")}, headers=auth(token))
        assert response.status_code == 413 and "the limit is 0.1 MB" in response.json()["detail"]
        # A body far over the limit is refused from its Content-Length, and a chunked one while it streams.
        huge = client.post("/api/cases", files={"image": ("a.png", b"\0" * 2_000_000, "image/png")}, headers=auth(token))
        assert huge.status_code == 413 and "image files may be at most" in huge.json()["detail"]
        chunks = (b"\0" * 100_000 for _ in range(20))
        streamed = client.post("/api/cases", content=chunks, headers=auth(token) | {"Content-Type": "multipart/form-data; boundary=x"})
        assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("get", "/api/cases/0123456789abcdef", None, 404, r"no case with id '0123456789abcdef'"),
        ("get", "/api/cases/0123456789abcdef/image", None, 404, r"no case with id"),
        ("post", "/api/cases/0123456789abcdef/feedback", {"agrees": True}, 404, r"no case with id"),
        ("get", "/api/cases?limit=0", None, 422, r"limit: Input should be greater than or equal to 1"),
        ("get", "/api/cases?since=yesterday", None, 422, r"since: Input should be a valid datetime"),
        ("post", "/api/tokens", {"name": "x", "role": "clinician"}, 403, r"needs an admin token; the token 'dr-a' has role 'clinician'"),
        ("get", "/api/audit", None, 403, r"needs an admin token"),
        ("get", "/api/tokens", None, 403, r"needs an admin token"),
    ],
)
def test_bad_requests_get_a_clear_4xx(service, method, path, body, status, message) -> None:
    response = getattr(service.client, method)(path, headers=auth(service.clinician), **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"]), response.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, r"give final_diagnosis, agrees or both"),
        ({"agrees": "maybe"}, r"agrees: Input should be a valid boolean"),
        ({"final_diagnosis": "mel", "patient_name": "x"}, r"patient_name: Extra inputs are not permitted"),
        ({"final_diagnosis": "x" * 201}, r"final_diagnosis: String should have at most 200 characters"),
    ],
)
def test_bad_feedback_gets_422(service, body, message) -> None:
    case_id = create_case(service).json()["id"]
    response = service.client.post(f"/api/cases/{case_id}/feedback", json=body, headers=auth(service.clinician))
    assert response.status_code == 422 and re.search(message, response.json()["detail"]), response.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, r"missing API token: send the header 'Authorization: Bearer <token>'"),
        ({"Authorization": "Bearer ddx_wrong"}, r"API token not recognised"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, r"missing API token"),
    ],
    ids=["missing", "wrong", "not-bearer"],
)
@pytest.mark.parametrize("path", ["/api/cases", "/api/models", "/api/cases/abc"])
def test_missing_or_wrong_token_is_401(service, headers, message, path) -> None:
    response = service.client.get(path, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert re.search(message, response.json()["detail"])
    upload = service.client.post("/api/cases", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, headers=headers)
    assert upload.status_code == 401


# --------------------------------------------------------------------------- tokens, roles, audit


def test_admin_creates_tokens_and_reads_the_audit_log(service) -> None:
    created = service.client.post("/api/tokens", json={"name": "dr-new", "role": "clinician"}, headers=auth(service.admin))
    assert created.status_code == 201
    new_token = created.json()["token"]
    assert create_case(service, token=new_token).status_code == 201
    duplicate = service.client.post("/api/tokens", json={"name": "dr-new"}, headers=auth(service.admin))
    assert duplicate.status_code == 409 and "exists" in duplicate.json()["detail"]
    blank = service.client.post("/api/tokens", json={"name": "  "}, headers=auth(service.admin))
    assert blank.status_code == 422 and "must not be blank" in blank.json()["detail"]
    bad_role = service.client.post("/api/tokens", json={"name": "x", "role": "root"}, headers=auth(service.admin))
    assert bad_role.status_code == 422 and "role: Input should be 'clinician' or 'admin'" in bad_role.json()["detail"]
    names = {t["name"]: t["role"] for t in service.client.get("/api/tokens", headers=auth(service.admin)).json()}
    assert names == {"admin-1": "admin", "dr-a": "clinician", "dr-new": "clinician"}
    audit = service.client.get("/api/audit", headers=auth(service.admin)).json()
    actions = [(e["action"], e["actor"]) for e in audit["items"]]
    assert actions[0] == ("case.create", "dr-new") and ("token.create", "admin-1") in actions
    entry = audit["items"][0]
    assert entry["model_sha256"] and len(entry["input_sha256"]) == 64 and entry["output"]["predicted"]


def test_tokens_are_stored_hashed(service) -> None:
    db_file = service.settings.data_dir / "dermdx.db"
    create_case(service)
    service.storage.dispose()  # checkpoint the WAL into the file
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("dermdx.db*"))
    for token in (service.admin, service.clinician):
        assert token.encode() not in raw
        assert hash_token(token).encode() in raw
    with sqlite3.connect(db_file) as connection:
        stored = {row[0] for row in connection.execute("SELECT token_sha256 FROM api_tokens")}
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in (service.admin, service.clinician)}


def test_cli_creates_a_token_once_and_serve_refuses_a_missing_model(tmp_path, capsys) -> None:
    assert main(["serve", "--create-token", "root", "--role", "admin", "--data-dir", str(tmp_path / "d")]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    storage = Storage(f"sqlite:///{tmp_path / 'd' / 'dermdx.db'}", tmp_path / "d" / "images")
    with storage.session() as session:
        assert storage.verify_token(session, token).role == "admin"
    storage.dispose()
    assert main(["serve", "--create-token", "root", "--data-dir", str(tmp_path / "d")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing.safetensors"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "model file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- concurrency, logs


def test_concurrent_case_creations_are_all_stored_and_audited(service) -> None:
    # Half the uploads share one image: the content-addressed image store must not clash either.
    images = [jpeg_bytes(seed=0 if k % 2 else k) for k in range(20)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda image: create_case(service, image=image), images))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 20
    listed = service.client.get("/api/cases", params={"limit": 100}, headers=auth(service.clinician)).json()
    assert listed["total"] == 20 and {c["id"] for c in listed["items"]} == ids
    audit = service.client.get("/api/audit", params={"limit": 500}, headers=auth(service.admin)).json()["items"]
    created = [e["case_id"] for e in audit if e["action"] == "case.create"]
    assert sorted(created) == sorted(ids)
    stored = list(service.settings.image_dir.rglob("*.jpg"))
    assert len(stored) == len(set(images)) and not list(service.settings.image_dir.rglob("*.tmp"))


def test_logs_hold_no_patient_data(service, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    case = create_case(service, filename="Jane_Doe_2001-04-03.jpg", age=97, sex="female", site="scalp").json()
    service.client.post(f"/api/cases/{case['id']}/feedback", json={"final_diagnosis": "Lentigo maligna", "comment": "Mrs Doe, seen twice"}, headers=auth(service.clinician))
    service.client.get(f"/api/cases/{case['id']}", headers=auth(service.clinician))
    create_case(service, age="ninety-seven", site="scalp", filename="Jane_Doe.jpg")  # a rejected one too
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert case["id"] in text  # the service does log, by id
    for secret in ("Jane_Doe", "scalp", "female", "Lentigo", "Mrs Doe", "ninety-seven"):
        assert secret not in text, secret
    assert not re.search(r"\b97\b", text)


# --------------------------------------------------------------------------- security headers, page


def test_cors_is_closed_by_default_and_opens_per_setting(service, isic_model_file, tmp_path) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    preflight = service.client.options("/api/cases", headers=origin | {"Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in service.client.get("/api/health", headers=origin).headers
    opened = make_service(isic_model_file, tmp_path / "other", cors_origins=("https://elsewhere.example",))
    with TestClient(opened.app) as client:
        assert client.get("/api/health", headers=origin).headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_page_is_served_with_its_assets_and_loads_nothing_external(service) -> None:
    page = service.client.get("/")
    assert page.status_code == 200 and DISCLAIMER in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'capture="environment"' in page.text and "{{" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = service.client.get(asset)
        assert response.status_code == 200 and response.headers["content-security-policy"]
        assert not re.search(r"https?://", response.text), asset
    assert not re.search(r"(src|href)=\"https?://", page.text)


def test_an_unreadable_image_file_on_disk_is_a_404_not_a_500(service) -> None:
    case = create_case(service).json()
    for path in service.settings.image_dir.rglob("*.jpg"):
        path.unlink()
    response = service.client.get(case["image_url"], headers=auth(service.clinician))
    assert response.status_code == 404 and "missing from the data folder" in response.json()["detail"]


def test_report_is_json_and_a_blank_photo_is_refused_for_quality(isic_model_file, tmp_path) -> None:
    from PIL import Image

    reporter = CasePredictor(Predictor.from_checkpoint(isic_model_file, batch_size=1))
    Image.fromarray(np.full((300, 300, 3), 200, dtype=np.uint8)).save(tmp_path / "blank.png")
    report = reporter.report(tmp_path / "blank.png", age=None, sex="unknown", site="unknown")
    assert json.loads(json.dumps(report)) == report  # stored as JSON as is
    assert {"heatmap", "triage", "recommendation", "abstention"} <= set(report) and report["format"] == "dermdx-report/1"
    assert report["abstention"]["abstain"] is True and any(r.startswith("poor image quality: blank") for r in report["abstention"]["reasons"])
    assert report["triage"] != "reassure"


# --------------------------------------------------------------------------- migrations


def test_migrating_an_empty_sqlite_database_gives_the_orm_schema(tmp_path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    upgrade_database(engine)
    upgrade_database(engine)  # a second start changes nothing
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert diff == []
    engine.dispose()


# --------------------------------------------------------------------------- PostgreSQL

POSTGRES_URL = os.environ.get("DERMDX_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES_URL, reason="set DERMDX_TEST_POSTGRES_URL=postgresql+psycopg://user@127.0.0.1:5432/scratch_db to run (the database is wiped)")
def test_postgresql_gets_the_schema_by_migration_and_stores_concurrent_cases(isic_model_file, tmp_path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import text

    engine = make_engine(POSTGRES_URL)
    with engine.begin() as connection:  # a scratch database: start empty
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    svc = make_service(isic_model_file, tmp_path / "data", db_url=POSTGRES_URL)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
    engine.dispose()
    with svc.storage.session() as session:
        token = svc.storage.create_token(session, "dr-pg", "clinician")
    with TestClient(svc.app) as client:
        svc.client, svc.clinician = client, token
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda k: create_case(svc, image=jpeg_bytes(seed=k % 2)), range(16)))
        assert [r.status_code for r in responses] == [201] * 16
        case_id = responses[0].json()["id"]
        updated = client.post(f"/api/cases/{case_id}/feedback", json={"final_diagnosis": "BCC", "agrees": False}, headers=auth(token)).json()
        assert updated["final_diagnosis"] == "bcc"
        assert client.get("/api/cases", params={"diagnosis": "bcc"}, headers=auth(token)).json()["total"] == 1
        assert client.get("/api/cases", headers=auth(token)).json()["total"] == 16


def test_an_unexpected_error_is_a_500_with_an_incident_id_and_a_log_line_without_its_text(isic_model_file, tmp_path, caplog, monkeypatch) -> None:
    svc = make_service(isic_model_file, tmp_path / "data")
    with svc.storage.session() as session:
        token = svc.storage.create_token(session, "dr-d", "clinician")

    def broken(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("model crashed on Jane Doe's photo")

    monkeypatch.setattr(svc.app.state.reporter, "report", broken)
    caplog.set_level(logging.INFO)
    with TestClient(svc.app, raise_server_exceptions=False) as client:
        response = client.post("/api/cases", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")}, headers=auth(token))
        assert response.status_code == 500 and re.match(r"internal error \(incident [0-9a-f]{12}\); nothing was stored", response.json()["detail"])
        assert client.get("/api/cases", headers=auth(token)).json()["total"] == 0
    assert "RuntimeError" in caplog.text and "Jane" not in caplog.text
