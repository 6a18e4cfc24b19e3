"""medxfer's built-in plugins (import name ``medxfer_plugins``), one module each.

Each module is registered in the ``medxfer`` entry-point group of ``pyproject.toml``,
exactly as a third-party package registers its own.
"""
