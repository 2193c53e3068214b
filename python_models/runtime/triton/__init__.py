"""Thin ``TritonPythonModel`` adapters of the production Python models; ``model_repository/*/1/model.py`` import
one class from here. Same import rules as ``python_models.runtime``."""
