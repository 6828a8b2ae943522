//! sysctl through /proc/sys/net of the calling thread's network namespace.
