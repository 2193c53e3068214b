"""Runs every batch through python_models' own error handling (adapter.guarded) into a planted server fault."""

from python_models.runtime.triton.adapter import guarded, read_rows
from python_models.runtime.decode import probe


class TritonPythonModel:
    def execute(self, requests):
        return guarded(requests, self._run)

    def _run(self, requests):
        read_rows(requests, probe)  # bad client data would be answered INVALID_ARGUMENT before any fault
        raise MemoryError("planted fault: out of memory in _run")
