"""Pure translation: the service plane, as one view may see it -> Envoy resources and errors.

No I/O and no xDS transport here: the result is a tuple of xds-protos messages that the
caller hands to the xDS layer. Names follow `kontinuum.control.naming`.
"""

from kontinuum.control.translate.options import OutlierDetection, SidecarOptions, Translation
from kontinuum.control.translate.sidecar import translate_sidecar

__all__ = ["OutlierDetection", "SidecarOptions", "Translation", "translate_sidecar"]
