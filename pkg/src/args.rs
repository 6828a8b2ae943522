//! `CNI_ARGS` (`K=V;K=V`), `runtimeConfig` capabilities and `args.cni` helpers.
