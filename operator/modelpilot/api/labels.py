"""Every label, annotation and resource name the operator reads or writes on Kubernetes objects."""

from __future__ import annotations

LABEL_DEPLOYMENT = "modelpilot.io/deployment"
LABEL_REVISION = "modelpilot.io/revision"
LABEL_COMPONENT = "modelpilot.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_SPEC_HASH = "modelpilot.io/spec-hash"
# Manual control: `<action>@<time>` (promote, promote-full, abort, retry, resume), acted on once.
REQUEST_ANNOTATION = "modelpilot.io/request"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
POOL_LABEL = "modelpilot.io/pool"
LABEL_MONITOR_CLIENT = "modelpilot.io/monitor-client"  # pods allowed to reach the monitor (NetworkPolicy)
LABEL_MONITOR_NAMESPACE = (
    "modelpilot.io/monitor-namespace"  # on the monitor's cluster-scoped TokenReview binding
)
ANNOTATION_MONITOR_CONFIG_HASH = (
    "modelpilot.io/monitor-config-hash"  # restarts the monitor on a config change
)
ANNOTATION_COMPRESS_METHOD = "modelpilot.io/compress-method"
ANNOTATION_SOURCE_VERSION = "modelpilot.io/source-version"
ANNOTATION_TARGET_VERSION = "modelpilot.io/target-version"
KOPF_FINALIZER = "modelpilot.io/kopf-finalizer"  # configured so kopf never invents one; no handler adds it
