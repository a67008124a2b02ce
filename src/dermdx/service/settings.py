"""Service settings: where data lives, which database, and what an upload may be."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = Path("~/.dermdx")
DB_FILE = "dermdx.db"

# Body sites offered by the form: the HAM10000 ``localization`` values, which the ISIC models know.
SITES = (
    "unknown", "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "upper extremity",
)  # fmt: skip
SEXES = ("unknown", "female", "male")
MAX_AGE = 120

# Image formats a case may carry, as PIL names them -> MIME type.
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass
class ServiceSettings:
    """What ``create_app`` needs besides the model.

    Args:
        data_dir: folder for the SQLite database and the uploaded images (created if missing).
        db_url: SQLAlchemy URL; default ``sqlite:///<data_dir>/dermdx.db``. PostgreSQL:
            ``postgresql+psycopg://user:pass@host/db`` (images still live under ``data_dir``).
        max_upload_bytes: largest accepted image file.
        max_pixels: largest accepted width x height; larger images (decompression bombs among
            them) get 413 before they are decoded.
        image_types: accepted formats (PIL names); the file's content decides, not its name.
        cors_origins: origins allowed to call the API from a browser; empty (default) = none.
        max_page_size: the most cases one list request returns.

    Example:
        >>> settings = ServiceSettings(data_dir=tmp_path)
        >>> settings.database_url
        'sqlite:///.../dermdx.db'
    """

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = None
    max_upload_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    image_types: tuple[str, ...] = ("JPEG", "PNG")
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    max_page_size: int = 100

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        unknown = [t for t in self.image_types if t not in IMAGE_TYPES]
        if unknown:
            raise ValueError(f"image_types {unknown} not supported; choose from {list(IMAGE_TYPES)}")
        if self.max_upload_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"max_upload_bytes and max_pixels must be positive, got {self.max_upload_bytes} and {self.max_pixels}")
        self.cors_origins = tuple(self.cors_origins)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / DB_FILE).resolve()}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"
