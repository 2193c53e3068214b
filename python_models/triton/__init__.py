"""Thin ``TritonPythonModel`` adapters; ``model_repository/*/1/model.py`` import one class from here."""
