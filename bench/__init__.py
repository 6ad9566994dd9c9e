"""`make bench`: the demo provider consumed directly versus through the whole system."""

__all__: list[str] = []
