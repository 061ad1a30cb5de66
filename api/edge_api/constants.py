"""Names shared by the CRDs, the operator and the runner (group, labels, keys)."""

from typing import Final

GROUP: Final = "edgerunner.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

KIND_FUNCTION: Final = "EdgeFunction"
KIND_ROUTE: Final = "EdgeRoute"
PLURAL_FUNCTION: Final = "edgefunctions"
PLURAL_ROUTE: Final = "edgeroutes"

#: Label on every ConfigMap the operator writes for runners; its value says what it holds.
LABEL_KIND: Final = f"{GROUP}/kind"
LABEL_KIND_FUNCTION: Final = "function"
LABEL_KIND_ROUTE: Final = "route"
#: Label naming the EdgeFunction / EdgeRoute a ConfigMap was built from.
LABEL_OWNER_NAME: Final = f"{GROUP}/name"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "edge-operator"

#: Annotation carrying the sha256 of the module in a function ConfigMap.
ANNOTATION_DIGEST: Final = f"{GROUP}/digest"
