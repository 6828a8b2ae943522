//! Helpers for the black-box conformance suite.
