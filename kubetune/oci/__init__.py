"""OCI modelcar export: an exported model packed under ``/models`` on a small base image and pushed to a registry.

No container engine: ``skopeo`` pulls the base image into an OCI layout, ``olot`` adds one layer per model file,
``skopeo`` pushes it and the pushed manifest's digest is checked against the local one (``modelcar``).
References are parsed and checked in ``reference``; every ``skopeo`` call, with its errors told on one line
naming the registry and without credentials, is in ``skopeo``. Credentials come only from the standard registry
auth file (``REGISTRY_AUTH_FILE``, ``${XDG_RUNTIME_DIR}/containers/auth.json``, ``~/.docker/config.json``),
which ``skopeo`` reads itself.
"""
