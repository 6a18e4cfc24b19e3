"""What a plugin is built from: base classes, option checks, optional attributes and
backbone capabilities.

The names a plugin uses are re-exported by :mod:`medxfer.api` (and so by :mod:`medxfer`),
which is where plugins import them from. Nothing here imports torch when it is imported,
so that listing plugins (``medxfer plugins``) stays fast.
"""
