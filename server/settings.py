"""Service settings, read once from the environment (prefix `PS_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gallery.vectors import MilvusConfig

# Names accepted in PS_PROVIDERS, in the order ONNX Runtime should try them.
PROVIDER_NAMES = ("tensorrt", "cuda", "cpu")
# Room in a request body for the form fields and multipart framing besides the files.
FORM_FIELDS_ROOM = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told from outside; see the README for each variable."""

    model_config = SettingsConfigDict(env_prefix="PS_", extra="ignore")

    model: Path = Field(
        Path("models/demo/model.onnx"), description="model.onnx; its model.json lies beside it"
    )
    data_dir: Path = Field(Path("data"), description="gallery database, index and frame images")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="when set, X-API-Key is required")
    max_upload_mb: float = Field(20.0, gt=0, description="largest accepted image file, MiB")
    max_pixels: int = Field(40_000_000, gt=0, description="largest accepted image, pixels")
    max_files: int = Field(32, ge=1, description="most image files in one POST /gallery")
    decode_budget_pixels: int = Field(
        40_000_000,
        gt=0,
        description="pixels being decoded at once, all requests together (bounds memory)",
    )
    # A plain comma list, not a JSON array, so it reads naturally in a shell or compose file.
    providers: str | None = Field(
        None,
        description="ONNX Runtime providers to try, in order; unset: cuda (when this "
        "onnxruntime has it), then cpu",
    )
    inference_threads: int = Field(1, ge=1, description="concurrent model runs")
    query_scenes: int = Field(
        0,
        ge=0,
        le=16,
        description="stored frames a crop query (no box) is placed into and embedded in, the "
        "placements averaged; 0 embeds the crop alone (docs/ARCHITECTURE.md, 'Crop queries')",
    )
    max_batch: int = Field(
        8, ge=1, description="most frames (of any requests) in one batch of ingest detections"
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="how long a batch's first frame waits for others to join it"
    )
    faiss_threads: int = Field(
        1, ge=1, description="FAISS threads per search (1 suits concurrent single queries)"
    )
    vector_backend: Literal["faiss", "milvus"] = Field(
        "faiss", description="where the gallery's vectors are searched (SQLite stays the truth)"
    )
    milvus_uri: str | None = Field(
        None,
        description="a .db path runs Milvus Lite in process; http://host:19530 is a Milvus "
        "server or cluster; default DATA_DIR/milvus.db",
    )
    milvus_token: str | None = Field(None, description="Milvus credentials (user:password)")
    milvus_index: Literal["flat", "hnsw", "ivf_flat"] = Field(
        "hnsw", description="Milvus index type: flat (exact), hnsw or ivf_flat"
    )
    milvus_collection_prefix: str = Field(
        "gallery",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="collection names are PREFIX_<model id>; one prefix per gallery",
    )
    min_detection_score: float | None = Field(
        None, ge=0, le=1, description="detections kept at ingest; default from the model card"
    )
    public_url: str | None = Field(
        None,
        description="base URL clients reach the service at (e.g. https://ps.example); "
        "image_url is relative to the service when unset",
    )
    log_level: str = "info"

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not names or any(name not in PROVIDER_NAMES for name in names):
            raise ValueError(f"providers must be a comma list of {PROVIDER_NAMES}, got {value!r}")
        return ",".join(names)

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        text = str(value).rstrip("/")
        if not text.startswith(("http://", "https://")) or any(c in text for c in "?# \n"):
            raise ValueError(f"public_url must be an http(s) base URL, got {value!r}")
        return text

    @field_validator("api_key", "milvus_uri", "milvus_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model", "data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Relative paths are taken from the working folder at start, once, and logged so."""
        return value.expanduser().resolve()

    @property
    def milvus(self) -> MilvusConfig | None:
        """The Milvus config of the gallery when PS_VECTOR_BACKEND=milvus, else None."""
        if self.vector_backend != "milvus":
            return None
        return MilvusConfig(
            uri=self.milvus_uri or str(self.data_dir / "milvus.db"),
            index_type=self.milvus_index.upper(),
            token=self.milvus_token or "",
            collection_prefix=self.milvus_collection_prefix,
        )

    @property
    def provider_list(self) -> tuple[str, ...]:
        """The providers asked for in PS_PROVIDERS; empty when it is unset."""
        return tuple(self.providers.split(",")) if self.providers else ()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        """Whole-request limit: every allowed file at full size plus room for the form fields."""
        return self.max_upload_bytes * self.max_files + FORM_FIELDS_ROOM

    @property
    def max_search_body_bytes(self) -> int:
        """/search takes one image: one file at full size plus room for the form fields."""
        return self.max_upload_bytes + FORM_FIELDS_ROOM
