"""Service settings, read once from the environment (prefix `PS_`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gallery.settings import GallerySettings

# Room in a request body for the form fields and multipart framing besides the files.
FORM_FIELDS_ROOM = 1024 * 1024


class Settings(GallerySettings):
    """Everything the service can be told from outside; see the README for each variable."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="when set, X-API-Key is required")
    max_upload_mb: float = Field(20.0, gt=0, description="largest accepted image file, MiB")
    max_files: int = Field(32, ge=1, description="most image files in one POST /gallery")
    decode_budget_pixels: int = Field(
        40_000_000,
        gt=0,
        description="pixels being decoded at once, all requests together (bounds memory)",
    )
    inference_threads: int = Field(1, ge=1, description="concurrent model runs")
    query_scenes: int = Field(
        0,
        ge=0,
        le=16,
        description="stored frames a crop query (no box) is placed into and embedded in, the "
        "placements averaged; 0 embeds the crop alone (docs/ARCHITECTURE.md, 'Crop queries')",
    )
    reembed: bool = Field(
        True,
        description="re-embed, in the background, stored frames that another model embedded "
        "(after a model change); off: they stay unsearched until `python -m gallery.reembed`",
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
    public_url: str | None = Field(
        None,
        description="base URL clients reach the service at (e.g. https://ps.example); "
        "image_url is relative to the service when unset",
    )
    log_level: str = "info"

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        text = str(value).rstrip("/")
        if not text.startswith(("http://", "https://")) or any(c in text for c in "?# \n"):
            raise ValueError(f"public_url must be an http(s) base URL, got {value!r}")
        return text

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_api_key(cls, value: object) -> object:
        return None if value == "" else value

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
