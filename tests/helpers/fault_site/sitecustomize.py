"""Installs tests/helpers/faults.py in a process started with this folder on PYTHONPATH.

Only when ITH_TEST_FAULT_SHARDS is set, and only once `ith_core.stages.imagine` is imported (an
import hook), so other processes (the Prefect server, the worker itself) are left alone.
"""

import os
import sys

if os.environ.get("ITH_TEST_FAULT_SHARDS"):
    import importlib.abc

    _HELPERS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    class _InstallFaults(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "ith_core.stages.imagine":
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            exec_module = spec.loader.exec_module

            def exec_and_install(module):
                exec_module(module)
                sys.path.insert(0, _HELPERS)
                import faults

                faults.install()

            spec.loader.exec_module = exec_and_install
            return spec

    sys.meta_path.insert(0, _InstallFaults())
