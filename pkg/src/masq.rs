//! ipMasq: one nftables rule set per network, created once and checked cheaply.
