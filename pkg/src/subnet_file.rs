//! flannel's subnet file (/run/flannel/subnet.env) and the host-local IPAM derived from it.
