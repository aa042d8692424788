"""The control plane's registry: model versions, their packages, and what backends serve.

See :mod:`gateway.registry.service` for the push order that makes a push atomic, and
:mod:`gateway.registry.admission` for how versions are numbered. Import from the modules
themselves: this package file re-exports nothing, so no module of it waits on another's import.
"""
