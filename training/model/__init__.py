"""The ROI-AlignPS* person-search network."""

from .config import CONFIGS, ModelConfig
from .network import PersonSearchModel, build_model
from .tasks import TASK_KINDS, TASKS

__all__ = ["CONFIGS", "TASKS", "TASK_KINDS", "ModelConfig", "PersonSearchModel", "build_model"]
