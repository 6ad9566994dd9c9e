"""livechat inference workers: context, provider chain, token events."""

from inference.app import create_app
from inference.handlers import create_router
from inference.providers.base import Completion, Provider, ProviderError, ProviderRequest
from inference.providers.demo import DemoProvider
from inference.settings import InferenceSettings

__all__ = [
    "Completion",
    "DemoProvider",
    "InferenceSettings",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "create_app",
    "create_router",
]
