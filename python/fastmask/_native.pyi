from typing import Any

__version__: str

def build_info() -> dict[str, Any]: ...
