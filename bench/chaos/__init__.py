"""`make chaos`: the system under load while its parts are killed, then an audit."""

__all__: list[str] = []
