//! The cluster view (peers: node IP + pod CIDR) and the reconcile of twill-owned peer routes.
