//! IPAM: the in-process host-local allocator and delegation to any other IPAM plugin.
