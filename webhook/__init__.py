"""The admission webhook: turns NSM's pod annotation into an injected client (``nsc``).

``review`` holds the decision as a pure function of an AdmissionReview; ``inject`` builds the
containers and the JSON Patch; ``namespaces`` finds a namespace's annotations and labels (the
API server in a cluster, a file elsewhere); ``server`` serves ``/mutate`` and ``/ready`` over
HTTPS. See docs/kubernetes.md.
"""
