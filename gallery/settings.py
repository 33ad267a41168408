"""Where a gallery lives and what fills it, read from the environment (prefix `PS_`): the
service and the bulk ingest on Ray read the same variables, so both write what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gallery.vectors import MilvusConfig

# Names accepted in PS_PROVIDERS, in the order ONNX Runtime should try them.
PROVIDER_NAMES = ("tensorrt", "cuda", "cpu")


class GallerySettings(BaseSettings):
    """The data directory, its vector backend, and the model (with its providers, detection
    threshold and image limit) whose embeddings it holds; see the README for each variable."""

    model_config = SettingsConfigDict(env_prefix="PS_", extra="ignore")

    model: Path = Field(
        Path("models/demo/model.onnx"), description="model.onnx; its model.json lies beside it"
    )
    data_dir: Path = Field(Path("data"), description="gallery database, index and frame images")
    max_pixels: int = Field(40_000_000, gt=0, description="largest accepted image, pixels")
    # A plain comma list, not a JSON array, so it reads naturally in a shell or compose file.
    providers: str | None = Field(
        None,
        description="ONNX Runtime providers to try, in order; unset: cuda (when this "
        "onnxruntime has it), then cpu",
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

    @field_validator("milvus_uri", "milvus_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not names or any(name not in PROVIDER_NAMES for name in names):
            raise ValueError(f"providers must be a comma list of {PROVIDER_NAMES}, got {value!r}")
        return ",".join(names)

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
