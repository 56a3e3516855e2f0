"""nasbench-ptb: a tabular NAS benchmark of recurrent cells on Penn Treebank (numpy + h5py only).

Installed, the repository's three folders are one namespace: ``nasbench_ptb`` (this query library),
``nasbench_ptb.builder`` (``builder/``, PyTorch) and ``nasbench_ptb.server`` (``api/``, FastAPI); pyproject's
``package-dir`` maps them, so no top-level ``builder`` or ``api`` lands in site-packages. Neither is imported here.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_SUBPACKAGES = {"nasbench_ptb.builder": "builder", "nasbench_ptb.server": "api"}


class _SourceCheckout:
    """The same names when this package is loaded from a source checkout: run without installing (``PYTHONPATH=.``,
    as on the GPU machine), as an editable install, or from a copy of the tree (mutation testing).

    Only for the two subpackages, and only when the package's parent folder is a checkout (its pyproject.toml,
    builder/ and api/ beside it): it loads that checkout's ``builder/`` or ``api/`` under the installed name, so the
    copy of the tree that provided ``nasbench_ptb`` also provides its subpackages."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        folder = _SUBPACKAGES.get(name)
        init = _os.path.join(_ROOT, folder, "__init__.py") if folder else None
        if init is None or not _os.path.isfile(init):
            return None
        from importlib.util import spec_from_file_location

        return spec_from_file_location(name, init, submodule_search_locations=[_os.path.dirname(init)])


def _is_checkout(root: str) -> bool:
    return all(_os.path.isfile(_os.path.join(root, *p)) for p in
               (("pyproject.toml",), ("builder", "cell.py"), ("api", "asgi.py")))


if _is_checkout(_ROOT) and not any(getattr(f, "__name__", "") == "_SourceCheckout" for f in _sys.meta_path):
    _sys.meta_path.insert(0, _SourceCheckout)
