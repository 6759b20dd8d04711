"""The data contracts, shipped in the wheel as the package ``pipelines.schemas``.

This folder stays at the top of the repository (the product's layout) and is mapped into the
distribution by ``[tool.setuptools.package-dir]`` in pyproject.toml; code reads it with
``importlib.resources.files("pipelines.schemas")``, never by a path relative to a module, so
an installed wheel and an editable checkout read the same files. ``drops/`` and ``gx/`` are
read by :mod:`pipelines.ingest`; ``feeds/``, ``exports/`` and ``openapi.json`` document the
wire formats (tests hold the code to them).
"""
