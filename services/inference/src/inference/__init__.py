"""livechat inference workers: context, provider chain, token events."""

from inference.app import create_app
from inference.demo import DemoProvider
from inference.provider import Completion, Provider, ProviderError, ProviderRequest
from inference.router import create_router
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
