"""Load test of the clinician service on this machine: requests/s and p50 / p99 latency per endpoint.

    python benchmarks/load_test.py                          # tiny untrained model, 200 cases + 500 GETs
    python benchmarks/load_test.py --model-kind lite0       # EfficientNet-Lite0 at 160 px (ImageNet weights, no training)
    python benchmarks/load_test.py --model runs/x/model.safetensors
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --token ddx_...   # a service already running here

Without ``--url`` it starts ``dermdx serve`` in a subprocess on a free 127.0.0.1 port with a fresh
data folder, creates an admin token, and stops the service at the end. Traffic goes to loopback
only: a ``--url`` whose host does not resolve to a loopback address is refused. The run is bounded
in requests (``--cases``, ``--gets``) and in time (``--max-seconds`` over both phases): whichever
comes first ends it. Phase 1 creates cases (multipart upload + prediction + database writes);
phase 2 mixes GET one case (60%), list 20 cases (30%) and the case photo (10%).
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

ISIC_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


# --------------------------------------------------------------------------- setup


def make_model(kind: str, folder: Path) -> Path:
    """A model file for the run: ``tiny`` (timm's test_efficientnet, 32 px) or ``lite0`` (160 px, ImageNet weights)."""
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import PreprocessConfig
    from dermdx.models import create_model

    torch.manual_seed(0)
    if kind == "tiny":
        model = create_model("test_efficientnet", num_classes=len(ISIC_CLASSES))
        info = ModelInfo(model_name="test_efficientnet", classes=ISIC_CLASSES, preprocess=PreprocessConfig(image_size=32))
    else:
        model = create_model("tf_efficientnet_lite0", num_classes=len(ISIC_CLASSES), pretrained=True)
        info = ModelInfo(model_name="tf_efficientnet_lite0", classes=ISIC_CLASSES, preprocess=PreprocessConfig(image_size=160))
    path = folder / f"{kind}.safetensors"
    save_model(path, model, info)
    return path


def test_images(count: int, folder: Path | None) -> list[bytes]:
    """JPEG bytes: real dermoscopy photos from ``folder`` when given, else 600x450 synthetic ones."""
    if folder is not None and folder.is_dir():
        files = sorted(folder.glob("*.jpg"))[:count]
        if files:
            return [f.read_bytes() for f in files]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        base = rng.integers(90, 200, 3)
        pixels = np.clip(base + rng.normal(0, 30, (450, 600, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as error:
        raise SystemExit(f"--url host {host!r} does not resolve ({error})") from None
    outside = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if outside:
        raise SystemExit(f"--url {url} resolves to {outside}, not loopback; this load test only targets this machine (127.0.0.1 / ::1)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(model: Path, data_dir: Path, port: int) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "dermdx.cli"]
    made = subprocess.run([*command, "serve", "--create-token", "load-test", "--role", "admin", "--data-dir", str(data_dir)], check=True, capture_output=True, text=True)
    token = made.stdout.strip().splitlines()[-1]
    log = open(data_dir / "service.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen([*command, "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dermdx serve exited with {process.returncode}; see {data_dir / 'service.log'}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, token, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.terminate()
    raise SystemExit("dermdx serve did not answer /api/health within 180 s")


# --------------------------------------------------------------------------- load


@dataclass
class Record:
    endpoint: str
    seconds: float
    status: int


@dataclass
class Phase:
    name: str
    records: list[Record] = field(default_factory=list)
    wall: float = 0.0


def run_phase(name: str, jobs: list, concurrency: int, deadline: float, client_factory) -> Phase:  # noqa: ANN001
    """Run ``jobs`` (callables taking a client, returning (endpoint, status)) on ``concurrency`` threads until done or ``deadline``."""
    phase = Phase(name)
    lock = threading.Lock()
    queue = list(reversed(jobs))

    def worker() -> None:
        with client_factory() as client:
            while time.monotonic() < deadline:
                with lock:
                    if not queue:
                        return
                    job = queue.pop()
                started = time.perf_counter()
                try:
                    endpoint, status = job(client)
                except httpx.HTTPError as error:
                    endpoint, status = getattr(job, "endpoint", "?"), 0
                    print(f"transport error: {type(error).__name__}", file=sys.stderr)
                elapsed = time.perf_counter() - started
                with lock:
                    phase.records.append(Record(endpoint, elapsed, status))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.wall = time.perf_counter() - started
    return phase


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summarise(phases: list[Phase]) -> list[dict]:
    rows = []
    for phase in phases:
        endpoints = sorted({r.endpoint for r in phase.records})
        for endpoint in endpoints:
            records = [r for r in phase.records if r.endpoint == endpoint]
            ok = [r.seconds for r in records if 200 <= r.status < 300]
            rows.append({
                "phase": phase.name,
                "endpoint": endpoint,
                "requests": len(records),
                "errors": len(records) - len(ok),
                "req_per_s": len(records) / phase.wall if phase.wall else float("nan"),
                "p50_ms": 1000 * percentile(ok, 50),
                "p99_ms": 1000 * percentile(ok, 99),
            })  # fmt: skip
        all_ok = [r.seconds for r in phase.records if 200 <= r.status < 300]
        rows.append({
            "phase": phase.name, "endpoint": "all", "requests": len(phase.records),
            "errors": len(phase.records) - len(all_ok), "req_per_s": len(phase.records) / phase.wall if phase.wall else float("nan"),
            "p50_ms": 1000 * percentile(all_ok, 50), "p99_ms": 1000 * percentile(all_ok, 99), "wall_s": phase.wall,
        })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| phase | endpoint | requests | errors | requests/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['endpoint']} | {r['requests']} | {r['errors']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service on this machine (loopback only); needs --token")
    parser.add_argument("--token", help="API token for --url (a clinician or admin token)")
    parser.add_argument("--model", type=Path, help="model file for the started service (default: --model-kind)")
    parser.add_argument("--model-kind", choices=("tiny", "lite0"), default="tiny", help="model to create when --model is not given")
    ham_images = Path(os.environ.get("DERMDX_DATA", "../shared/data")) / "ham10000" / "images"
    parser.add_argument("--images", type=Path, default=ham_images, help="folder of JPEGs to upload (default: HAM10000 images if present, else synthetic 600x450)")
    parser.add_argument("--distinct-images", type=int, default=50, help="how many different photos to cycle through")
    parser.add_argument("--cases", type=int, default=200, help="case creations (phase 1)")
    parser.add_argument("--gets", type=int, default=500, help="GET requests (phase 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--max-seconds", type=float, default=300, help="wall-clock cap on both phases together")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder (database, images, service.log)")
    args = parser.parse_args(argv)
    if min(args.cases, args.gets, args.concurrency) < 1 or args.cases > 10_000 or args.gets > 50_000 or args.max_seconds > 3600:
        raise SystemExit("bounds: 1 <= --cases <= 10000, 1 <= --gets <= 50000, --concurrency >= 1, --max-seconds <= 3600")

    workdir = Path(tempfile.mkdtemp(prefix="dermdx-load-"))
    process = None
    model_name = str(args.model) if args.model else args.model_kind
    try:
        if args.url:
            if not args.token:
                raise SystemExit("--url needs --token")
            check_loopback(args.url)
            url, token = args.url.rstrip("/"), args.token
        else:
            model = args.model or make_model(args.model_kind, workdir)
            process, token, url = start_service(model, workdir / "data", free_port())
        headers = {"Authorization": f"Bearer {token}"}
        images = test_images(args.distinct_images, args.images)
        rng = random.Random(0)
        created: list[str] = []
        created_lock = threading.Lock()

        def client_factory() -> httpx.Client:
            return httpx.Client(base_url=url, headers=headers, timeout=120)

        def create_job(k: int):  # noqa: ANN202
            def job(client: httpx.Client) -> tuple[str, int]:
                data = {"age": str(20 + k % 70), "sex": ("female", "male", "unknown")[k % 3], "site": ("back", "face", "lower extremity")[k % 3]}
                response = client.post("/api/cases", files={"image": (f"{k}.jpg", images[k % len(images)], "image/jpeg")}, data=data)
                if response.status_code == 201:
                    with created_lock:
                        created.append(response.json()["id"])
                return "POST /api/cases", response.status_code

            job.endpoint = "POST /api/cases"
            return job

        deadline = time.monotonic() + args.max_seconds
        print(f"service {url}, model {model_name}, {args.concurrency} client threads; phase 1: {args.cases} case creations", flush=True)
        phase1 = run_phase("create", [create_job(k) for k in range(args.cases)], args.concurrency, deadline, client_factory)
        if not created:
            raise SystemExit("no case was created: is the service up, and is the token valid? (a started service logs to service.log; rerun with --keep)")

        def get_job(k: int):  # noqa: ANN202
            kind = rng.random()
            case_id = rng.choice(created)
            if kind < 0.6:
                endpoint, path = "GET /api/cases/{id}", f"/api/cases/{case_id}"
            elif kind < 0.9:
                endpoint, path = "GET /api/cases?limit=20", f"/api/cases?limit=20&offset={rng.randrange(0, max(1, len(created) - 20))}"
            else:
                endpoint, path = "GET /api/cases/{id}/image", f"/api/cases/{case_id}/image"

            def job(client: httpx.Client) -> tuple[str, int]:
                return endpoint, client.get(path).status_code

            job.endpoint = endpoint
            return job

        print(f"phase 2: {args.gets} GETs", flush=True)
        phase2 = run_phase("read", [get_job(k) for k in range(args.gets)], args.concurrency, deadline, client_factory)
        rows = summarise([phase1, phase2])
        with client_factory() as client:
            stored = client.get("/api/cases", params={"limit": 1}).json()["total"]
        print(f"\n{len(created)} cases created, {stored} in the database")
        lost = not args.url and stored != len(created)  # a fresh database holds exactly what was created
        print()
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node() or 'this machine'}, {os.cpu_count()} CPUs, model {model_name}, concurrency {args.concurrency}")
        print(markdown(rows))
        if args.json:
            args.json.write_text(json.dumps({"model": model_name, "concurrency": args.concurrency, "rows": rows}, indent=2))
        if lost:
            print(f"error: {len(created)} cases were created but the database holds {stored}", file=sys.stderr)
        return 0 if all(r["errors"] == 0 for r in rows) and not lost else 1
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.keep:
            print(f"data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
